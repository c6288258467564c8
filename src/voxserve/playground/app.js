// The playground's four panels. Each talks to the same public API any OpenAI client uses.

import { apiKey, authHeaders, getJson, postJson, raiseForStatus, serverSentEvents, showStatus } from "./api.js";
import { AudioSender, Microphone, PCM, PcmPlayer, RealtimeConnection, realtimeUrl, sessionToken } from "./realtime.js";

const $ = (id) => document.getElementById(id);

// ---- the key and the server's state -------------------------------------------------------------

const KEY_STORE = "voxserve-playground-key";

async function checkServer() {
  const status = $("server-status");
  try {
    const health = await fetch("/health").then((r) => r.json());
    const models = await fetch("/v1/models", { headers: authHeaders() });
    if (models.status === 401) {
      status.dataset.state = "needs-key";
      status.textContent = apiKey() ? "that key was refused" : "this server needs an API key";
      return;
    }
    const listed = (await models.json()).data || [];
    $("model-ids").replaceChildren(...listed.map((m) => new Option(m.id, m.id)));
    status.dataset.state = "ok";
    const loaded = (health.loaded_models || []).length;
    status.textContent = `ready · ${listed.length} model ids · ${loaded} loaded`;
    await loadVoices();
  } catch (error) {
    status.dataset.state = "down";
    status.textContent = `server unreachable: ${error.message}`;
  }
}

async function loadVoices() {
  const voices = (await getJson("/v1/audio/voices")).data || [];
  for (const select of [$("tts-voice"), $("chat-voice")]) {
    const chosen = select.value || "alloy";
    const groups = [
      ["OpenAI names", voices.filter((v) => v.kind === "openai")],
      ["Local voices", voices.filter((v) => v.kind !== "openai")],
    ];
    const children = groups
      .filter(([, list]) => list.length)
      .map(([label, list]) => {
        const group = document.createElement("optgroup");
        group.label = label;
        group.append(...list.map((v) => new Option(v.kind === "openai" ? `${v.id} → ${v.voice}` : v.id, v.id)));
        return group;
      });
    if (children.length) {
      select.replaceChildren(...children);
      select.value = voices.some((v) => v.id === chosen) ? chosen : voices[0].id;
    }
  }
}

function setUpKey() {
  const input = $("api-key");
  input.value = sessionStorage.getItem(KEY_STORE) || "";
  const use = (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    checkServer();
  };
  input.addEventListener("change", use);
  $("key-form").addEventListener("submit", use);
}

// ---- upload -> transcript, streamed -------------------------------------------------------------

function setUpTranscription() {
  const fileInput = $("file-input");
  const button = $("transcribe-button");
  const status = $("transcribe-status");
  const transcript = $("transcript");
  const preview = $("file-preview");

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.hidden = !file;
    if (file) preview.src = URL.createObjectURL(file);
  });

  button.addEventListener("click", async () => {
    const file = fileInput.files[0];
    if (!file) {
      showStatus(status, "Choose an audio file first.", true);
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", $("stt-model").value.trim() || "whisper-1");
    form.append("stream", "true");
    const language = $("stt-language").value.trim();
    if (language) form.append("language", language);

    button.disabled = true;
    transcript.replaceChildren();
    transcript.dataset.state = "running";
    transcript.dataset.deltas = "0";
    showStatus(status, `Transcribing ${file.name}…`);
    const started = performance.now();
    try {
      const response = await fetch("/v1/audio/transcriptions", { method: "POST", headers: authHeaders(), body: form });
      await raiseForStatus(response);
      let deltas = 0;
      for await (const event of serverSentEvents(response)) {
        if (event.error) throw new Error(event.error.message);
        if (event.type === "transcript.text.delta" && event.delta) {
          const piece = document.createElement("span");
          piece.className = "delta";
          piece.textContent = event.delta; // the deltas joined are exactly the final text
          transcript.append(piece);
          deltas += 1;
          transcript.dataset.deltas = String(deltas);
          const seconds = ((performance.now() - started) / 1000).toFixed(1);
          showStatus(status, `Transcribing ${file.name}… ${deltas} part(s) after ${seconds} s`);
        } else if (event.type === "transcript.text.done") {
          transcript.dataset.text = event.text;
          const seconds = ((performance.now() - started) / 1000).toFixed(1);
          const audio = event.usage?.input_token_details?.audio_tokens;
          const heard = audio ? ` · ${(audio / 10).toFixed(1)} s of audio` : "";
          showStatus(status, `Done in ${seconds} s${heard} · ${deltas} streamed part(s)`);
          transcript.dataset.state = "done";
        }
      }
      if (transcript.dataset.state !== "done") throw new Error("The stream ended before the transcript was done.");
    } catch (error) {
      transcript.dataset.state = "error";
      showStatus(status, error.message, true);
    } finally {
      button.disabled = false;
    }
  });
}

// ---- text -> speech -----------------------------------------------------------------------------

function setUpSpeech() {
  const button = $("tts-button");
  const status = $("tts-status");
  const audio = $("tts-audio");
  const download = $("tts-download");

  audio.addEventListener("loadedmetadata", () => {
    audio.dataset.state = "ready";
  });
  audio.addEventListener("error", () => {
    audio.dataset.state = "error";
    showStatus(status, "The browser could not play this audio.", true);
  });

  button.addEventListener("click", async () => {
    const input = $("tts-text").value;
    if (!input.trim()) {
      showStatus(status, "Type something to say.", true);
      return;
    }
    const format = $("tts-format").value;
    button.disabled = true;
    audio.dataset.state = "loading";
    showStatus(status, "Synthesizing…");
    const started = performance.now();
    try {
      const response = await postJson("/v1/audio/speech", {
        model: "gpt-4o-mini-tts",
        voice: $("tts-voice").value,
        input,
        response_format: format,
        speed: Number($("tts-speed").value) || 1,
        stream: false, // the whole file at once: wav and flac headers then carry their true length
      });
      const blob = await response.blob();
      if (audio.src) URL.revokeObjectURL(audio.src);
      audio.src = URL.createObjectURL(blob);
      download.href = audio.src;
      download.download = `speech.${format}`;
      download.hidden = false;
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      showStatus(status, `${(blob.size / 1024).toFixed(0)} KiB of ${format} in ${seconds} s`);
      audio.play().catch(() => {}); // autoplay may be refused; the controls are there
    } catch (error) {
      audio.dataset.state = "error";
      showStatus(status, error.message, true);
    } finally {
      button.disabled = false;
    }
  });
}

// ---- microphone -> live captions (realtime transcription session) -------------------------------

function setUpCaptions() {
  const button = $("mic-button");
  const status = $("captions-status");
  const captions = $("live-captions");
  const level = $("mic-level");
  let connection = null;
  let microphone = null;
  let meter = null;

  const line = (itemId) => {
    let p = captions.querySelector(`p[data-item-id="${CSS.escape(itemId)}"]`);
    if (!p) {
      p = document.createElement("p");
      p.dataset.itemId = itemId;
      p.className = "partial";
      captions.append(p);
    }
    captions.scrollTop = captions.scrollHeight;
    return p;
  };

  const stop = (message, isError = false) => {
    clearInterval(meter);
    level.style.width = "0";
    if (microphone) microphone.stop();
    if (connection && connection.open) connection.close();
    microphone = null;
    connection = null;
    button.dataset.state = isError ? "error" : "idle";
    button.textContent = "Start microphone";
    button.disabled = false;
    if (message !== undefined) showStatus(status, message, isError);
  };

  button.addEventListener("click", async () => {
    if (button.dataset.state === "live") {
      stop("Stopped.");
      return;
    }
    button.disabled = true;
    button.dataset.state = "connecting";
    showStatus(status, "Connecting…");
    const transcription = { model: "gpt-4o-transcribe" };
    const language = $("captions-language").value.trim();
    if (language) transcription.language = language;
    const session = {
      type: "transcription",
      audio: {
        input: {
          format: PCM,
          transcription,
          turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
        },
      },
    };
    const sender = new AudioSender();
    // The microphone starts at once, while the session connects: what is said meanwhile waits in `sender`.
    const listening = Microphone.start((chunk) => sender.push(chunk));
    listening.then((started) => {
      microphone = started;
    }, () => {});
    try {
      const token = await sessionToken(session);
      connection = await RealtimeConnection.open(realtimeUrl({ intent: "transcription" }), token);
      connection
        .on("input_audio_buffer.speech_started", (e) => line(e.item_id))
        .on("conversation.item.input_audio_transcription.delta", (e) => {
          line(e.item_id).textContent += e.delta || "";
        })
        .on("conversation.item.input_audio_transcription.completed", (e) => {
          const p = line(e.item_id);
          p.textContent = (e.transcript || "").trim();
          p.className = "final";
          if (!p.textContent) p.remove();
        })
        .on("conversation.item.input_audio_transcription.failed", (e) => {
          const p = line(e.item_id);
          p.className = "failed";
          p.textContent = `(not transcribed: ${e.error?.message || "failed"})`;
        })
        .on("error", (e) => showStatus(status, e.error?.message || "realtime error", true));
      connection.onclose = (close) => {
        if (button.dataset.state === "live") stop(`Connection closed (${close.code}).`, close.code !== 1000);
      };
      connection.send({ type: "session.update", session });
      sender.connection = connection;
      sender.drain();
      await listening;
      meter = setInterval(() => {
        level.style.width = `${Math.min(100, (microphone?.level || 0) * 400)}%`;
      }, 100);
      button.dataset.state = "live";
      button.textContent = "Stop microphone";
      button.disabled = false;
      showStatus(status, "Listening: speak, and pause to end a sentence.");
    } catch (error) {
      // A refused connection: a microphone that started anyway is stopped as soon as it has.
      listening.then((started) => started.stop(), () => {});
      stop(error.message, true);
    }
  });
}

// ---- push-to-talk voice chat (realtime conversation session) ------------------------------------

function setUpVoiceChat() {
  const button = $("talk-button");
  const status = $("chat-status");
  const log = $("chat-log");
  const player = new PcmPlayer();
  let connection = null;
  let microphone = null;
  let talking = false;
  let responding = false; // between response.created and response.done
  const sender = new AudioSender(); // the audio of this press

  const turn = (id, role) => {
    let p = log.querySelector(`p[data-item-id="${CSS.escape(id)}"]`);
    if (!p) {
      p = document.createElement("p");
      p.dataset.itemId = id;
      p.dataset.role = role;
      p.className = `turn ${role} pending`;
      log.append(p);
    }
    log.scrollTop = log.scrollHeight;
    return p;
  };

  const connect = async () => {
    const session = {
      type: "realtime",
      model: "gpt-realtime",
      instructions: $("chat-instructions").value,
      output_modalities: ["audio"],
      audio: {
        input: { format: PCM, transcription: { model: "whisper-1" }, turn_detection: null },
        output: { format: PCM, voice: $("chat-voice").value },
      },
    };
    const token = await sessionToken(session);
    const opened = await RealtimeConnection.open(realtimeUrl({ model: "gpt-realtime" }), token);
    opened
      .on("input_audio_buffer.committed", (e) => {
        turn(e.item_id, "user").textContent = "…";
      })
      .on("conversation.item.input_audio_transcription.completed", (e) => {
        const p = turn(e.item_id, "user");
        p.textContent = (e.transcript || "").trim() || "(nothing heard)";
        p.classList.remove("pending");
      })
      .on("conversation.item.input_audio_transcription.failed", (e) => {
        const p = turn(e.item_id, "user");
        p.textContent = "(not transcribed)";
        p.classList.remove("pending");
      })
      .on("response.created", () => {
        responding = true;
      })
      .on("response.output_audio_transcript.delta", (e) => {
        turn(e.item_id, "assistant").textContent += e.delta || "";
      })
      .on("response.output_text.delta", (e) => {
        turn(e.item_id, "assistant").textContent += e.delta || "";
      })
      .on("response.output_audio_transcript.done", (e) => {
        const p = turn(e.item_id, "assistant");
        if (e.transcript) p.textContent = e.transcript;
        p.classList.remove("pending");
      })
      .on("response.output_audio.delta", (e) => player.play(e.delta))
      .on("response.done", (e) => {
        responding = false;
        for (const p of log.querySelectorAll("p.assistant.pending")) p.classList.remove("pending");
        const failed = e.response && e.response.status === "failed";
        button.dataset.state = "idle";
        showStatus(status, failed ? "The answer failed." : "Hold the button to talk again.", failed);
      })
      .on("error", (e) => showStatus(status, e.error?.message || "realtime error", true));
    opened.onclose = (close) => {
      connection = null;
      responding = false;
      if (microphone) microphone.stop();
      microphone = null;
      button.dataset.state = "idle";
      if (close.code !== 1000) showStatus(status, `Connection closed (${close.code}).`, true);
    };
    opened.send({ type: "session.update", session });
    return opened;
  };

  const startTalking = async () => {
    if (talking) return;
    talking = true;
    sender.reset();
    if (microphone) microphone.sending = true;
    player.stop();
    button.dataset.state = "talking";
    showStatus(status, "Listening… release to send.");
    try {
      if (connection && responding) connection.send({ type: "response.cancel" }); // talking over the answer
      // The first press connects and starts the microphone together; the audio waits for the session.
      const [opened, started] = await Promise.allSettled([
        connection || connect(),
        microphone || Microphone.start((chunk) => sender.push(chunk)),
      ]);
      if (started.status === "fulfilled") microphone = started.value;
      if (opened.status === "rejected" || started.status === "rejected") {
        throw (opened.status === "rejected" ? opened : started).reason;
      }
      connection = opened.value;
      sender.connection = connection;
      sender.drain();
      microphone.sending = talking;
      if (!talking) await stopTalking(); // released while connecting
    } catch (error) {
      talking = false;
      button.dataset.state = "error";
      showStatus(status, error.message, true);
    }
  };

  const stopTalking = async () => {
    if (!talking && button.dataset.state !== "talking") return;
    talking = false;
    if (!microphone || !connection) return; // still connecting: startTalking finishes the turn
    await microphone.flush();
    if (talking) return; // pressed again meanwhile: the turn goes on
    microphone.sending = false;
    if (!connection) return;
    sender.drain();
    if (sender.bytes < 4800) {
      // Under 100 ms of audio: the server would refuse the commit. Nothing is sent as a turn.
      connection.send({ type: "input_audio_buffer.clear" });
      button.dataset.state = "idle";
      showStatus(status, "Hold the button while you speak, then release.", true);
      return;
    }
    button.dataset.state = "thinking";
    showStatus(status, "Thinking…");
    connection.send({ type: "input_audio_buffer.commit" });
    connection.send({ type: "response.create" });
  };

  button.addEventListener("pointerdown", (e) => {
    button.setPointerCapture(e.pointerId);
    startTalking();
  });
  button.addEventListener("pointerup", stopTalking);
  button.addEventListener("pointercancel", stopTalking);
  button.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat) {
      e.preventDefault();
      startTalking();
    }
  });
  button.addEventListener("keyup", (e) => {
    if (e.key === " " || e.key === "Enter") {
      e.preventDefault();
      stopTalking();
    }
  });
}

setUpKey();
setUpTranscription();
setUpSpeech();
setUpCaptions();
setUpVoiceChat();
checkServer();
