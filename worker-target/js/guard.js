// The origin's streamed body, passed through chunk by chunk; if it breaks
// off, `notice` (the core's error record in the stream's own format) is sent
// before the stream ends, because the Workers runtime ends a response whose
// body stream errors as if it were complete.
export function guardStream(body, notice) {
  const reader = body.getReader();
  let failure = null;
  return new ReadableStream(
    {
      async pull(controller) {
        if (failure !== null) {
          controller.error(failure);
          return;
        }
        let step;
        try {
          step = await reader.read();
        } catch (error) {
          failure = error;
          controller.enqueue(notice);
          return;
        }
        if (step.done) {
          controller.close();
        } else {
          controller.enqueue(step.value);
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

// An LLM's answer, passed through chunk by chunk while `meter` (the core's
// usage meter, a WASM object this function owns) reads each chunk; when the
// stream ends — complete, cut by the origin, or abandoned by the client —
// `meter.finish` logs the request with its usage and the meter is freed.
// Each chunk goes on before the meter reads it, so reading adds no delay to
// it; except when the meter also changes the stream (`meter.filters`: the
// proxy asked for an OpenAI stream's usage): then `meter.feed` returns what
// to send instead of the chunk (perhaps nothing yet, holding an event back
// until it ends, or without the usage chunk) and `meter.flush` what it
// still holds at the end.
// `notice` (or null) is the error record sent if the origin's stream breaks
// off, as in guardStream. `length` (or null) is the answer's declared
// Content-Length: the stream then goes through a FixedLengthStream (else an
// IdentityTransformStream), so the client still gets that length, and a cut
// answer stays short instead of ending like a complete chunked one.
// `clientSignal` is the request's: a client that leaves settles the usage
// as unknown (client gone) at once. Returns `{ stream, done }`; `done`
// settles once the meter has finished (the Worker keeps the request alive
// until then).
const COMPLETE = 0;
const CLIENT_GONE = 1;
const BROKEN = 2;

//
// `meter` may be null: the answer of a request holding a slot that is not
// read for usage, passed through only so that `done` settles at its end
// (the slot is held until then).
export function meterStream(body, notice, length, meter, clientSignal) {
  const reader = body.getReader();
  const filters = meter?.filters ?? false;
  let failure = null;
  let settle;
  const done = new Promise((resolve) => {
    settle = resolve;
  });
  let ended = false;
  const end = (how) => {
    if (ended) {
      return;
    }
    ended = true;
    const finishing = meter;
    meter = null;
    try {
      finishing?.finish(how);
    } finally {
      finishing?.free();
      settle();
    }
  };
  // The request's signal, for a runtime that reports a client leaving
  // there (workerd was not seen to, once the answer streams; the pipe below
  // is what notices it there).
  if (clientSignal.aborted) {
    end(CLIENT_GONE);
  } else {
    clientSignal.addEventListener("abort", () => end(CLIENT_GONE), { once: true });
  }
  const stream = new ReadableStream(
    {
      async pull(controller) {
        if (failure !== null) {
          controller.error(failure);
          return;
        }
        for (;;) {
          let step;
          try {
            step = await reader.read();
          } catch (error) {
            failure = error;
            // Settled now: a client gone meanwhile pulls no more.
            end(clientSignal.aborted ? CLIENT_GONE : BROKEN);
            if (notice != null) {
              controller.enqueue(notice);
            } else {
              controller.error(error);
            }
            return;
          }
          if (step.done) {
            const rest = meter?.flush();
            if (rest != null && rest.byteLength > 0) {
              controller.enqueue(rest);
            }
            end(COMPLETE);
            controller.close();
            return;
          }
          const now = Date.now();
          if (!filters) {
            // The chunk goes on first; the meter reads it after.
            controller.enqueue(step.value);
            meter?.feed(step.value, now);
            return;
          }
          const instead = meter?.feed(step.value, now);
          const out = instead == null ? step.value : instead;
          // A pull that enqueues nothing would not be called again.
          if (out.byteLength > 0) {
            controller.enqueue(out);
            return;
          }
        }
      },
      cancel(reason) {
        end(CLIENT_GONE);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  // Handed to the runtime through one of its own streams, piped from here:
  // a client that leaves errors the runtime's side, the pipe then cancels
  // this stream, and `cancel` settles the usage. Returned as it is, this
  // stream was neither cancelled nor pulled again (workerd), and the log
  // line was lost.
  const out = length == null ? new IdentityTransformStream() : new FixedLengthStream(length);
  stream.pipeTo(out.writable).catch(() => {});
  return { stream: out.readable, done };
}

// The client's request body on its way to the origin: first `held` (the
// chunks the model gate read before deciding), then whatever `reader` still
// has, chunk by chunk. Two things can stop it, and either aborts the
// subrequest through its own signal, which tears the upload down so the
// origin sees an incomplete request (erroring the body stream alone is not
// enough: the runtime may end a failed stream as if it were complete):
// - past `limit` bytes in all (when no Content-Length was declared);
// - `check`, the gate, answering REFUSE for a chunk (or for the end, asked
//   with null). It is asked about every chunk until it answers DONE (or a
//   Uint8Array: the chunk to send instead, with the stream's usage asked
//   for; it is done then too); if it throws (it is only kept alive while the
//   fetch runs), the upload is refused too, never passed unchecked.
// The client's own abort signal is followed. Returns
// `{ stream, signal, exceeded, clientFailed, ended }`; `exceeded` turns true
// when the limit was the cause, `clientFailed` when reading the client's
// body failed; `ended` settles once the upload has ended, whichever way (the
// gate behind `check` is kept until then: an origin may answer before it
// has the whole body).
const PASS = 0;
const DONE = 1;
const REFUSE = 2;

// An AbortController for the subrequest that aborts when the client's
// request does.
function following(clientSignal) {
  const controller = new AbortController();
  if (clientSignal.aborted) {
    controller.abort(clientSignal.reason);
  } else {
    clientSignal.addEventListener("abort", () => controller.abort(clientSignal.reason), {
      once: true,
    });
  }
  return controller;
}

export function forwardUpload(held, reader, check, limit, clientSignal) {
  const controller = following(clientSignal);
  let ended;
  const result = {
    stream: null,
    signal: controller.signal,
    exceeded: false,
    clientFailed: false,
    ended: new Promise((resolve) => {
      ended = resolve;
    }),
  };
  // The subrequest aborted (its client gone, or the upload stopped): the
  // upload has ended too, pulled again or not.
  controller.signal.addEventListener("abort", () => ended(), { once: true });
  let seen = 0;
  for (const chunk of held) {
    seen += chunk.byteLength;
  }
  let next = 0;
  const ask = (chunk) => {
    if (check == null) {
      return PASS;
    }
    let verdict;
    try {
      verdict = check(chunk);
    } catch {
      verdict = REFUSE;
    }
    if (verdict === DONE || verdict instanceof Uint8Array) {
      check = null;
    }
    return verdict;
  };
  const stop = (stream, error) => {
    controller.abort(error);
    stream.error(error);
    if (reader != null) {
      reader.cancel(error).catch(() => {});
    }
    ended();
  };
  result.stream = new ReadableStream(
    {
      async pull(stream) {
        if (next < held.length) {
          const chunk = held[next];
          held[next++] = null;
          stream.enqueue(chunk);
          return;
        }
        let step = { done: true };
        if (reader != null) {
          try {
            step = await reader.read();
          } catch (error) {
            // The client's body broke (its connection lost mid-body): the
            // client's failure, not the origin's.
            result.clientFailed = true;
            stop(stream, error);
            return;
          }
        }
        if (step.done) {
          if (ask(null) === REFUSE) {
            stop(stream, new Error("request body refused"));
          } else {
            stream.close();
            ended();
          }
          return;
        }
        seen += step.value.byteLength;
        if (seen > limit) {
          result.exceeded = true;
          stop(stream, new Error("request body over the limit"));
          return;
        }
        const verdict = ask(step.value);
        if (verdict === REFUSE) {
          stop(stream, new Error("request body refused"));
          return;
        }
        stream.enqueue(verdict instanceof Uint8Array ? verdict : step.value);
      },
      cancel(reason) {
        ended();
        return reader == null ? undefined : reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return result;
}

// A body of declared length with nothing to check: piped by the runtime
// itself (no JS per chunk) through a FixedLengthStream, so the origin still
// gets that Content-Length. A pipe that fails while the subrequest is still
// on is the client's body breaking (it left mid-body, or sent less than it
// declared): `clientFailed`, and the subrequest is aborted so the origin
// sees an incomplete request. When the origin fails instead, workerd fails
// the fetch first and the pipe after (seen in every run; the tests
// `a_body_its_client_breaks_gets_400` and
// `an_origin_that_breaks_off_an_upload_gets_502` hold it to that), so the
// fetch's failure is read before the pipe's. Returns the same shape as
// forwardUpload.
export function forwardFixed(body, length, clientSignal) {
  const controller = following(clientSignal);
  const fixed = new FixedLengthStream(length);
  let ended;
  const result = {
    stream: fixed.readable,
    signal: controller.signal,
    exceeded: false,
    clientFailed: false,
    ended: new Promise((resolve) => {
      ended = resolve;
    }),
  };
  body.pipeTo(fixed.writable).then(ended, (error) => {
    result.clientFailed = true;
    controller.abort(error);
    ended();
  });
  return result;
}
