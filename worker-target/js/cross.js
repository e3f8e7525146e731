// What crosses between JS and WASM for each request, in one call each way
// per head instead of a call per header, per part of each entry and per
// field of an init. Headers travel as one string ("name\nvalue\n" per
// entry; neither a name nor a value can hold a line feed).

export function headersFlat(headers) {
  let flat = "";
  for (const [name, value] of headers) {
    flat += name + "\n" + value + "\n";
  }
  return flat;
}

export function headersFromFlat(flat) {
  const headers = new Headers();
  const parts = flat.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) {
    headers.append(parts[i], parts[i + 1]);
  }
  return headers;
}

// The client's request head: "method\nurl\n" then its headers.
export function requestHead(request) {
  return request.method + "\n" + request.url + "\n" + headersFlat(request.headers);
}

// The origin's response head: "status\n" then its headers.
export function responseHead(response) {
  return response.status + "\n" + headersFlat(response.headers);
}

// The subrequest's init: the core's method and headers, the client's body
// (or null) and an abort signal, redirects handed back to the client.
export function subrequestInit(method, flat, body, signal) {
  return { method, headers: headersFromFlat(flat), body, signal, redirect: "manual" };
}

// A response to the client: a body (a stream, bytes, or null), its status
// and the core's headers.
export function newResponse(body, status, flat) {
  return new Response(body, { status, headers: headersFromFlat(flat) });
}
