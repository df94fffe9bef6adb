//! Field-level validation errors, the body of every 422.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Messages per field name, e.g. `{"email": ["must be a valid email address"]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct FieldErrors(pub BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// Records that `field` is wrong because of `message`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// One error on one field.
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.add(field, message);
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records what is wrong with an `Idempotency-Key`, if anything: the same
    /// rule for every endpoint that takes one (keys are stored and indexed).
    pub fn check_idempotency_key(&mut self, key: Option<&str>) {
        if key.is_some_and(|key| key.is_empty() || key.len() > 255) {
            self.add("Idempotency-Key", "must be 1 to 255 characters");
        }
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(field, messages)| format!("{field}: {}", messages.join("; ")))
            .collect();
        f.write_str(&parts.join(", "))
    }
}
