"""Audio in and out: decoding uploads, resampling, encoding. No model code here."""
