// Headers cross between JS and WASM as one string each way ("name\nvalue\n"
// per entry; neither a name nor a value can hold a line feed), instead of a
// call per header and per part of each entry.

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
