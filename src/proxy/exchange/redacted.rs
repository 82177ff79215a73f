//! What the redact bindings did to one request (`proxy::redact` fills it, the reply phase reads
//! its placeholders, `Exchange::finish` records it).

use std::sync::Arc;
use std::time::Duration;

use crate::policy::Policy;
use crate::redact::Placeholders;

/// What the redact bindings did to one request.
#[derive(Debug)]
pub struct Redacted {
    pub policies: Vec<Arc<Policy>>,
    pub placeholders: Arc<Placeholders>,
    /// Some policy asked for the originals back in the reply.
    pub restore: bool,
    pub took: Duration,
}

impl Redacted {
    /// The placeholders to put back in the reply, when some policy restores and something was
    /// replaced.
    pub fn restorer(&self) -> Option<Arc<Placeholders>> {
        (self.restore && !self.placeholders.is_empty()).then(|| self.placeholders.clone())
    }
}
