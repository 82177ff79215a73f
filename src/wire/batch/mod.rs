//! Batch uploads: bodies that hold many requests of an API, each of which a model reads later,
//! unattended. An OpenAI Files upload of a batch input file (`POST /v1/files`, `purpose=batch`:
//! JSONL lines `{custom_id, method, url, body}`) and Anthropic's Message Batches
//! (`POST /v1/messages/batches`: `{requests: [{custom_id, params}]}`). Each request is read in
//! the format of its own API, so that it is judged as it would be on that API's route.

mod message_batches;
mod multipart;
mod openai_files;

use super::{Api, ParsedRequest, Segment, WireError};

/// A batch upload format: the config's `routes.api` values `openai-files` and
/// `anthropic-message-batches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    OpenAiFiles,
    AnthropicMessageBatches,
}

/// One request of a batch, read in its API's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub custom_id: String,
    pub request: ParsedRequest,
}

/// What an upload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Requests, each to be judged.
    Requests(Vec<BatchItem>),
    /// A file uploaded for another purpose (named): not requests, and not read as text.
    Opaque { purpose: String },
}

impl Batch {
    pub const ALL: [Batch; 2] = [Batch::OpenAiFiles, Batch::AnthropicMessageBatches];

    pub fn from_name(name: &str) -> Option<Batch> {
        Batch::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Batch::OpenAiFiles => "openai-files",
            Batch::AnthropicMessageBatches => "anthropic-message-batches",
        }
    }

    /// The API whose error shape answers for the upload.
    pub fn api(self) -> Api {
        match self {
            Batch::OpenAiFiles => super::openai_chat::API,
            Batch::AnthropicMessageBatches => super::anthropic::API,
        }
    }

    /// Whether an upload is sent with this content type (its essence, lowercase).
    pub fn accepts(self, essence: &str) -> bool {
        match self {
            Batch::OpenAiFiles => essence == "multipart/form-data",
            Batch::AnthropicMessageBatches => {
                essence == "application/json" || essence.ends_with("+json")
            }
        }
    }

    /// The upload's contents; `content_type` is the request's whole header value.
    pub fn read(self, content_type: &str, body: &[u8]) -> Result<Contents, WireError> {
        match self {
            Batch::OpenAiFiles => openai_files::read(content_type, body),
            Batch::AnthropicMessageBatches => message_batches::read(body),
        }
    }
}

/// `request` with every location (and an error's path) put under `prefix`, e.g. `requests[2].params`.
fn within(prefix: &str, mut request: ParsedRequest) -> ParsedRequest {
    for Segment { location, .. } in &mut request.segments {
        *location = format!("{prefix}.{location}");
    }
    let spots = &mut request.spots;
    for location in spots.arguments.iter_mut().chain(spots.names.iter_mut()) {
        *location = format!("{prefix}.{location}");
    }
    request
}

fn error_within(prefix: &str, e: WireError) -> WireError {
    WireError {
        message: format!("{prefix}: {}", e.message),
        param: Some(match e.param {
            Some(p) => format!("{prefix}.{p}"),
            None => prefix.to_string(),
        }),
    }
}
