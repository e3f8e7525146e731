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

// The client's request body, passed through chunk by chunk, for a request
// that declared no Content-Length (so only streaming can enforce the limit).
// Past `limit` bytes the subrequest is aborted through its own signal, which
// tears the upload down so the origin sees an incomplete request: erroring
// the body stream alone is not enough, since the runtime may end a failed
// stream as if it were complete. The client's own abort signal is followed
// too. Returns `{ stream, signal, exceeded }`; `exceeded` turns true when the
// limit was the cause.
export function limitUpload(body, limit, clientSignal) {
  const controller = new AbortController();
  if (clientSignal.aborted) {
    controller.abort(clientSignal.reason);
  } else {
    clientSignal.addEventListener("abort", () => controller.abort(clientSignal.reason), {
      once: true,
    });
  }
  const result = { stream: null, signal: controller.signal, exceeded: false };
  const reader = body.getReader();
  let seen = 0;
  result.stream = new ReadableStream(
    {
      async pull(stream) {
        const step = await reader.read();
        if (step.done) {
          stream.close();
          return;
        }
        seen += step.value.byteLength;
        if (seen > limit) {
          result.exceeded = true;
          const error = new Error("request body over the limit");
          controller.abort(error);
          stream.error(error);
          reader.cancel(error).catch(() => {});
          return;
        }
        stream.enqueue(step.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return result;
}
