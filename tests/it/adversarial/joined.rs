//! Adversarial cases: joined.
