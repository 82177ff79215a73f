//! Adversarial cases: stream.
