// AudioWorklet: microphone samples -> PCM16 mono at the target rate, posted in 100 ms chunks.
// `sampleRate` is the AudioContext's rate; where it differs from the target, each output sample is
// the mean of the input samples it covers (a box filter, enough against aliasing for speech).

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = (options.processorOptions && options.processorOptions.targetRate) || 24000;
    this.step = sampleRate / this.target; // input samples per output sample
    this.size = Math.round(this.target / 10);
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.position = 0; // input samples consumed towards the next output sample
    this.energy = 0;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.energy += clipped * clipped;
    if (this.filled === this.size) {
      const level = Math.sqrt(this.energy / this.size);
      const pcm = this.chunk.buffer;
      this.port.postMessage({ pcm, level }, [pcm]); // transferred: the old chunk is empty from here on
      this.chunk = new Int16Array(this.size);
      this.filled = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true;
    const samples = input[0];
    if (this.step === 1) {
      for (let i = 0; i < samples.length; i++) this.emit(samples[i]);
      return true;
    }
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
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
