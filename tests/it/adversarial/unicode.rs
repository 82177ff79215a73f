//! Adversarial cases: unicode.
