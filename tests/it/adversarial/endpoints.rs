//! Adversarial cases: endpoints.
