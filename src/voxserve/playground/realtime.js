// The Realtime API from a browser (GA protocol): a short-lived key, the WebSocket, the microphone as
// PCM16 at 24 kHz, and playback of PCM16 answers.

import { apiKey, ApiError, authHeaders, raiseForStatus } from "./api.js";

export const SAMPLE_RATE = 24000;
export const PCM = { type: "audio/pcm", rate: SAMPLE_RATE };

export function bytesToBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function base64ToBytes(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// A key for the WebSocket. Browsers cannot set an Authorization header on a WebSocket, so the key
// travels in a subprotocol; an ephemeral `ek_` key minted for this session keeps the real key out of
// it. Where the server mints none (404), the typed key is used; with neither, the server has no keys.
export async function sessionToken(session) {
  const response = await fetch("/v1/realtime/client_secrets", {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 600 }, session }),
  });
  if (response.status === 404 || response.status === 405) return apiKey() || null;
  await raiseForStatus(response);
  const body = await response.json();
  return body.value;
}

export function realtimeUrl(params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime?${new URLSearchParams(params)}`;
}

// One realtime session over a WebSocket: JSON events out, handlers per server event type in.
export class RealtimeConnection {
  constructor(socket) {
    this.socket = socket;
    this.handlers = new Map();
    this.onclose = null;
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      for (const handler of [...(this.handlers.get(event.type) || []), ...(this.handlers.get("*") || [])]) {
        handler(event);
      }
    });
    socket.addEventListener("close", (close) => this.onclose && this.onclose(close));
  }

  static open(url, token) {
    const protocols = ["realtime"];
    if (token) protocols.push(`openai-insecure-api-key.${token}`);
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, protocols);
      const failed = () => reject(new ApiError(0, "The realtime WebSocket was refused or could not connect."));
      socket.addEventListener("error", failed, { once: true });
      socket.addEventListener(
        "open",
        () => {
          socket.removeEventListener("error", failed);
          resolve(new RealtimeConnection(socket));
        },
        { once: true },
      );
    });
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
    return this;
  }

  send(event) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }

  get open() {
    return this.socket.readyState === WebSocket.OPEN;
  }

  close() {
    this.socket.close();
  }
}

let sharedContext = null;

// One AudioContext for capture and playback, at 24 kHz where the browser allows it (the worklet
// resamples otherwise). Created on a click: browsers only start audio after a user gesture.
export async function audioContext() {
  if (!sharedContext) {
    try {
      sharedContext = new AudioContext({ sampleRate: SAMPLE_RATE });
    } catch (_) {
      sharedContext = new AudioContext();
    }
    await sharedContext.audioWorklet.addModule("/playground/pcm-worklet.js");
  }
  if (sharedContext.state === "suspended") await sharedContext.resume();
  return sharedContext;
}

// The microphone as 100 ms chunks of PCM16 mono 24 kHz (Uint8Array), while `sending` is true.
export class Microphone {
  constructor(stream, node, source, onChunk) {
    this.stream = stream;
    this.node = node;
    this.source = source;
    this.sending = true;
    this.level = 0;
    this.flushed = null; // resolves the pending flush()
    node.port.onmessage = (message) => {
      const { pcm, level, flushed } = message.data;
      this.level = level;
      if (this.sending && pcm.byteLength) onChunk(new Uint8Array(pcm));
      if (flushed && this.flushed) this.flushed();
    };
  }

  // Sends what the worklet holds now (less than one chunk), so that a turn ends where the person
  // stopped; resolves once it is sent (or after 300 ms, should the audio graph have stalled).
  flush() {
    return new Promise((resolve) => {
      const timer = setTimeout(done, 300);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.flushed = null;
        resolve();
      }
      this.flushed = done;
      this.node.port.postMessage("flush");
    });
  }

  static async start(onChunk) {
    // The context and its worklet first: the microphone is live from getUserMedia on, and what it
    // hears before the worklet is connected would be lost (the first words of a person who talks
    // right after the click).
    // No echo cancellation: the page never plays while it sends (push to talk stops the answer first),
    // and Chrome's canceller, once the page has played anything (a speech result), eats the first
    // second or two of what is said next.
    if (!navigator.mediaDevices) {
      throw new Error("The browser gives the microphone only to pages on https:// or localhost.");
    }
    const context = await audioContext();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: true },
    });
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm16-capture", { processorOptions: { targetRate: SAMPLE_RATE } });
    const mute = context.createGain();
    mute.gain.value = 0;
    // Connected through a silent gain so that the graph keeps pulling audio through the worklet.
    source.connect(node).connect(mute).connect(context.destination);
    return new Microphone(stream, node, source, onChunk);
  }

  stop() {
    this.sending = false;
    this.source.disconnect();
    this.node.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}

// Microphone chunks on their way to a session as `input_audio_buffer.append` events. The microphone
// starts while the session is still connecting: until `connection` is set and open, chunks wait here,
// so that nothing said in the meantime is lost.
export class AudioSender {
  constructor() {
    this.connection = null;
    this.pending = [];
    this.bytes = 0; // sent or waiting, since the last reset()
  }

  push(chunk) {
    this.bytes += chunk.length;
    this.pending.push(chunk);
    this.drain();
  }

  drain() {
    if (!this.connection || !this.connection.open) return;
    for (const chunk of this.pending.splice(0)) {
      this.connection.send({ type: "input_audio_buffer.append", audio: bytesToBase64(chunk) });
    }
  }

  reset() {
    this.pending = [];
    this.bytes = 0;
  }
}

// Plays PCM16 24 kHz pieces back to back, as they arrive.
export class PcmPlayer {
  constructor() {
    this.nextTime = 0;
    this.carry = null; // an odd byte left from the previous piece
    this.sources = new Set();
  }

  async play(base64) {
    let bytes = base64ToBytes(base64);
    if (this.carry) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.carry;
      joined.set(bytes, 1);
      bytes = joined;
      this.carry = null;
    }
    if (bytes.length % 2) {
      this.carry = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    if (!bytes.length) return;
    const context = await audioContext();
    const samples = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
    const buffer = context.createBuffer(1, samples.length, SAMPLE_RATE);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    this.nextTime = Math.max(this.nextTime, context.currentTime + 0.05);
    source.start(this.nextTime);
    this.nextTime += buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  // Stop what is still queued (the person started talking again).
  stop() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.nextTime = 0;
    this.carry = null;
  }
}
