// Talking to this server's OpenAI-style API from the page: auth headers, errors, server-sent events.

const keyInput = () => document.getElementById("api-key");

// The key the person typed (kept for this tab only); the page itself never carries one.
export function apiKey() {
  return keyInput().value.trim();
}

export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The message of an OpenAI error envelope, or the HTTP status when the body is not one.
export async function raiseForStatus(response) {
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    // not JSON: keep the status line
  }
  if (response.status === 401) message = `${message} Type this server's API key at the top of the page.`;
  throw new ApiError(response.status, message);
}

export async function getJson(path) {
  const response = await fetch(path, { headers: authHeaders() });
  await raiseForStatus(response);
  return response.json();
}

export async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  return raiseForStatus(response);
}

// Each `data:` payload of a text/event-stream body, parsed, as it arrives.
export async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

export function showStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}
