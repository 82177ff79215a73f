//! Adversarial cases: fields.
