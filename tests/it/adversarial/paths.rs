//! Adversarial cases: paths.
