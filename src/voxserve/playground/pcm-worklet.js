// AudioWorklet: microphone samples -> PCM16 mono at the target rate, posted in 100 ms chunks.
// `sampleRate` is the AudioContext's rate. Where it is higher than the target, each output sample is
// the mean of the input samples it covers (a box filter, enough against aliasing for speech); where it
// is lower, input samples are interpolated linearly. A "flush" message posts the part-filled chunk at
// once (the end of a push-to-talk turn must not wait for the next 100 ms).

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = (options.processorOptions && options.processorOptions.targetRate) || 24000;
    this.step = sampleRate / this.target; // input samples per output sample
    this.size = Math.round(this.target / 10);
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.energy = 0;
    // Downsampling: the running sum of the input samples for the next output sample.
    this.sum = 0;
    this.count = 0;
    this.position = 0; // input samples consumed towards the next output sample
    // Upsampling: the previous input sample and where the next output falls after it (0..1).
    this.previous = 0;
    this.phase = 0;
    this.port.onmessage = (message) => {
      if (message.data === "flush") this.post(true);
    };
  }

  post(flushed) {
    const level = this.filled ? Math.sqrt(this.energy / this.filled) : 0;
    const pcm = this.chunk.slice(0, this.filled).buffer;
    this.port.postMessage({ pcm, level, flushed }, [pcm]);
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.energy = 0;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.energy += clipped * clipped;
    if (this.filled === this.size) this.post(false);
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true;
    const samples = input[0];
    if (this.step === 1) {
      for (let i = 0; i < samples.length; i++) this.emit(samples[i]);
    } else if (this.step > 1) {
      for (let i = 0; i < samples.length; i++) {
        this.sum += samples[i];
        this.count += 1;
        this.position += 1;
        if (this.position >= this.step) {
          this.emit(this.sum / this.count);
          this.position -= this.step;
          this.sum = 0;
          this.count = 0;
        }
      }
    } else {
      for (let i = 0; i < samples.length; i++) {
        const current = samples[i];
        while (this.phase < 1) {
          this.emit(this.previous + (current - this.previous) * this.phase);
          this.phase += this.step;
        }
        this.phase -= 1;
        this.previous = current;
      }
    }
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
