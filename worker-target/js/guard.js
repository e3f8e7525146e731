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
