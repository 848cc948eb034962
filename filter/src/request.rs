//! Reading an OpenAI-format request: which endpoint it is for, and what its body says.
//!
//! The body is parsed once with serde_json into borrowed values: every byte is validated as JSON,
//! nothing is copied that has no escapes, and the `model` value keeps its exact byte span so that
//! `splice` can replace it without touching anything else. Fields the rules may read (`stream`,
//! `user`, `metadata`, `tools`, `response_format`) are read cheaply up front. The `messages` list
//! is read in the same pass: each message's role and the text of its content, borrowed from the
//! body, so that the text (most of a body) is scanned once; it is joined by kind only when a rule
//! asks for it. The Responses API's `input` and the completions `prompt` are kept raw and walked
//! when asked. Unknown fields are ignored here and forwarded untouched.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::ops::Range;

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::headers::Headers;

/// The OpenAI endpoints switchyard inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    /// The path after `/v1`, e.g. `/chat/completions`.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
        }
    }

    fn from_suffix(suffix: &str) -> Option<Self> {
        [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Responses]
            .into_iter()
            .find(|e| e.suffix() == suffix)
    }
}

/// Where a request path points: the endpoint, and the query string to carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'p> {
    pub endpoint: Endpoint,
    /// The query string including its `?`, or empty.
    pub query: &'p str,
}

/// Recognises `{prefix}/v1/{endpoint}` (with an optional query string) as an inspected endpoint.
pub fn target<'p>(prefix: &str, path: &'p str) -> Option<Target<'p>> {
    let (path_only, query) = match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    let rest = path_only.strip_prefix(prefix)?.strip_prefix("/v1")?;
    let endpoint = Endpoint::from_suffix(rest.strip_suffix('/').unwrap_or(rest))?;
    Some(Target { endpoint, query })
}

/// Why a request body cannot be inspected. Each becomes a 400 answer to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("request body is empty; a JSON object is required")]
    Empty,
    #[error("request body is not valid UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body has no `model` field")]
    MissingModel,
    #[error("`model` must be a string")]
    ModelNotString,
}

impl BodyError {
    /// A stable code for the error body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::Empty => "empty_body",
            BodyError::NotUtf8(_) => "invalid_utf8",
            BodyError::NotObject | BodyError::NotJson(_) => "invalid_json",
            BodyError::MissingModel => "missing_model",
            BodyError::ModelNotString => "invalid_model",
        }
    }
}

/// The `model` field: its value, and the byte span of the JSON string (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelField<'a> {
    pub value: Cow<'a, str>,
    pub span: Range<usize>,
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_even_if_null")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Messages<'a>>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// Keeps a member's raw value when it is `null` too (serde's `Option` would make that `None`), so
/// that an edit can replace the `null` instead of adding a second member of the same name.
fn raw_even_if_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// What switchyard knows about a request body after one parse.
#[derive(Debug)]
pub struct Body<'a> {
    pub model: ModelField<'a>,
    pub stream: bool,
    /// How `stream_options.include_usage` stands in the request (only meaningful when streaming).
    pub include_usage: IncludeUsage,
    pub user: Option<Cow<'a, str>>,
    pub tools: bool,
    pub json_mode: bool,
    metadata: Option<&'a RawValue>,
    messages: Option<Messages<'a>>,
    prompt: Option<&'a RawValue>,
    input: Option<&'a RawValue>,
    instructions: Option<&'a RawValue>,
}

/// Parses a request body. Fails only on what makes the request unusable.
pub fn parse(bytes: &[u8]) -> Result<Body<'_>, BodyError> {
    let text = crate::text::utf8(bytes).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))?;
    match text.trim_start().as_bytes().first() {
        None => return Err(BodyError::Empty),
        Some(b'{') => {}
        Some(_) => return Err(BodyError::NotObject),
    }
    let top: Top<'_> = serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let raw_model = top.model.ok_or(BodyError::MissingModel)?;
    let raw = raw_model.get();
    if !raw.starts_with('"') {
        return Err(BodyError::ModelNotString);
    }
    let value: Cow<'_, str> = serde_json::from_str(raw).map_err(|_| BodyError::ModelNotString)?;
    // The raw value borrows from `text`; its offset is where it sits in the body.
    let model = ModelField { value, span: span_in(text, raw_model) };

    Ok(Body {
        model,
        stream: top.stream.is_some_and(|s| s.get() == "true"),
        include_usage: include_usage(text, top.stream_options),
        user: top.user.and_then(|u| serde_json::from_str::<Cow<'_, str>>(u.get()).ok()),
        tools: top.tools.is_some_and(non_empty) || top.functions.is_some_and(non_empty),
        json_mode: top.response_format.is_some_and(is_json_format) || top.text.is_some_and(responses_json_format),
        metadata: top.metadata,
        messages: top.messages,
        prompt: top.prompt,
        input: top.input,
        instructions: top.instructions,
    })
}

/// Where a streaming request stands on `stream_options.include_usage`, with the byte positions an
/// edit needs to turn it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeUsage {
    /// The client asked for the usage chunk.
    Requested,
    /// No `stream_options` member (or `null`, whose span is given): insert one.
    NoOptions { null_span: Option<Range<usize>> },
    /// `stream_options` is an object without `include_usage`: insert after the `{` at this offset.
    MissingIn { open_brace: usize, empty: bool },
    /// `include_usage` is present but not `true`: replace the value at this span.
    Off { span: Range<usize> },
    /// `stream_options` is something unusable (not an object): leave the request alone.
    Unusable,
}

#[derive(Deserialize)]
struct StreamOptions<'a> {
    #[serde(borrow, default)]
    include_usage: Option<&'a RawValue>,
}

/// Byte span of a raw value borrowed from `text`.
fn span_in(text: &str, raw: &RawValue) -> Range<usize> {
    let start = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    start..start + raw.get().len()
}

fn include_usage(text: &str, options: Option<&RawValue>) -> IncludeUsage {
    let Some(options) = options else { return IncludeUsage::NoOptions { null_span: None } };
    let json = options.get();
    if json == "null" {
        return IncludeUsage::NoOptions { null_span: Some(span_in(text, options)) };
    }
    // serde would also read a JSON array as the struct's fields in order: only objects count.
    if !json.starts_with('{') {
        return IncludeUsage::Unusable;
    }
    let Ok(parsed) = serde_json::from_str::<StreamOptions<'_>>(json) else { return IncludeUsage::Unusable };
    match parsed.include_usage {
        Some(flag) if flag.get() == "true" => IncludeUsage::Requested,
        Some(flag) => {
            let inner = span_in(json, flag);
            let base = span_in(text, options).start;
            IncludeUsage::Off { span: base + inner.start..base + inner.end }
        }
        None => {
            let open_brace = span_in(text, options).start;
            let empty = json.trim_start_matches('{').trim_start().starts_with('}');
            IncludeUsage::MissingIn { open_brace, empty }
        }
    }
}

fn non_empty(raw: &RawValue) -> bool {
    !matches!(raw.get(), "null" | "[]" | "{}")
}

#[derive(Deserialize)]
struct FormatType<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Cow<'a, str>>,
}

/// `response_format: {"type": "json_object" | "json_schema"}` (chat completions).
fn is_json_format(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
        && serde_json::from_str::<FormatType<'_>>(raw.get())
            .ok()
            .and_then(|f| f.kind)
            .is_some_and(|k| k == "json_object" || k == "json_schema")
}

#[derive(Deserialize)]
struct ResponsesText<'a> {
    #[serde(borrow, default)]
    format: Option<&'a RawValue>,
}

/// `text: {"format": {"type": "json_object" | "json_schema"}}` (Responses API).
fn responses_json_format(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
        && serde_json::from_str::<ResponsesText<'_>>(raw.get()).ok().and_then(|t| t.format).is_some_and(is_json_format)
}

impl<'a> Body<'a> {
    /// The value of `metadata[key]`: strings as they are, other JSON values as their JSON text.
    pub fn metadata_value(&self, key: &str) -> Option<String> {
        let map: std::collections::HashMap<Cow<'_, str>, &RawValue> =
            serde_json::from_str(self.metadata?.get()).ok()?;
        let raw = map.get(key)?;
        Some(serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned()))
    }

    /// The message text of each kind. A kind made of one piece of text without escapes borrows it
    /// from the body.
    pub fn texts(&self) -> Texts<'a> {
        let mut texts = Texts::default();
        if let Some(instructions) = self.instructions {
            push_text(instructions, &mut texts.system);
        }
        if let Some(Messages(Some(messages))) = &self.messages {
            texts.take(messages);
        }
        for raw in [self.input, self.prompt].into_iter().flatten() {
            if raw.get().starts_with('[') && walk_messages(raw, &mut texts) {
                continue;
            }
            // A plain prompt or input: it is all "user" text.
            let mut text = Cow::Borrowed("");
            push_text(raw, &mut text);
            texts.last_user = text;
        }
        texts
    }
}

/// Message text of a request, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Texts<'a> {
    pub system: Cow<'a, str>,
    pub last_user: Cow<'a, str>,
    /// Text of every message other than system and the last user message.
    user_history: Cow<'a, str>,
}

impl<'a> Texts<'a> {
    fn parts(&self) -> [&str; 3] {
        [&self.system, &self.user_history, &self.last_user]
    }

    /// Adds the text of a message list; false when it is not one (no item has a role).
    fn take(&mut self, messages: &[Message<'a>]) -> bool {
        if messages.iter().all(|m| m.role.is_none()) {
            return false;
        }
        let last_user = messages.iter().rposition(|m| m.role.as_deref() == Some("user"));
        for (i, message) in messages.iter().enumerate() {
            let out = match message.role.as_deref() {
                Some("system" | "developer") => &mut self.system,
                _ if Some(i) == last_user => &mut self.last_user,
                _ => &mut self.user_history,
            };
            for piece in &message.content {
                append(out, piece);
            }
        }
        true
    }

    /// All message text: system, then the earlier messages, then the last user message (borrowed
    /// when only one of them has text).
    pub fn all(&self) -> Cow<'a, str> {
        let mut all = Cow::Borrowed("");
        for part in [&self.system, &self.user_history, &self.last_user] {
            append(&mut all, part);
        }
        all
    }

    /// The length of [`Texts::all`], without building it.
    pub fn all_len(&self) -> usize {
        let parts = self.parts().into_iter().filter(|p| !p.is_empty());
        let (count, bytes) = parts.fold((0usize, 0usize), |(n, len), p| (n + 1, len + p.len()));
        bytes + count.saturating_sub(1)
    }
}

/// Which text a rule reads (mirrors the config's `text.in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSource {
    System,
    LastUser,
    All,
}

/// The `visit_*` methods of a reader for which a JSON number, boolean or null holds nothing it
/// reads: each gives `$none`.
macro_rules! nothing_in_scalars {
    ($none:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
    };
}

/// [`nothing_in_scalars`], and strings hold nothing either.
macro_rules! nothing_in_strings_or_scalars {
    ($none:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($none)
        }
        nothing_in_scalars!($none);
    };
}

/// One message of a list: its role, and the text of its content in pieces.
#[derive(Debug)]
struct Message<'a> {
    role: Option<Cow<'a, str>>,
    content: Vec<Cow<'a, str>>,
}

/// A list of messages read where it lies in the body; `None` when the value is not a list. Items
/// that are not messages are left out.
#[derive(Debug)]
struct Messages<'a>(Option<Vec<Message<'a>>>);

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Messages<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages<'de>, A::Error> {
                let mut messages = Vec::new();
                while let Some(Item(item)) = seq.next_element::<Item<'de>>()? {
                    messages.extend(item);
                }
                Ok(Messages(Some(messages)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Messages<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Messages(None))
            }
            nothing_in_strings_or_scalars!(Messages(None));
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// One item of a message list, read in the same pass as the list: a message when it is an object
/// whose `role` is a string or null (any `content`, each field at most once), else `None`. Items
/// that are not messages are skipped, not errors.
struct Item<'a>(Option<Message<'a>>);

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

/// The message fields switchyard reads.
enum Field {
    Role,
    Content,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "role" => Field::Role,
                    "content" => Field::Content,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let mut role: Option<&'de RawValue> = None;
        let mut content: Option<Vec<Cow<'de, str>>> = None;
        let mut valid = true;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Role => {
                    let value: &'de RawValue = map.next_value()?;
                    valid &= role.replace(value).is_none();
                }
                Field::Content => {
                    let mut pieces = Vec::new();
                    map.next_value_seed(TextPieces(&mut pieces))?;
                    valid &= content.replace(pieces).is_none();
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let role = match role.map(RawValue::get) {
            None | Some("null") => None,
            Some(json) if json.starts_with('"') => match serde_json::from_str::<&'de str>(json) {
                Ok(text) => Some(Cow::Borrowed(text)),
                Err(_) => serde_json::from_str::<String>(json).ok().map(Cow::Owned),
            },
            Some(_) => {
                valid = false;
                None
            }
        };
        Ok(Item(valid.then(|| Message { role, content: content.unwrap_or_default() })))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item(None))
    }

    nothing_in_strings_or_scalars!(Item(None));
}

/// Walks a raw list of role/content messages; false when `raw` is not such a list.
fn walk_messages<'a>(raw: &'a RawValue, texts: &mut Texts<'a>) -> bool {
    match serde_json::from_str::<Messages<'a>>(raw.get()) {
        Ok(Messages(Some(messages))) => texts.take(&messages),
        _ => false,
    }
}

/// Appends the text in a content value (see [`TextPieces`]) to `out`.
fn push_text<'a>(raw: &'a RawValue, out: &mut Cow<'a, str>) {
    let mut pieces = Vec::new();
    let mut reader = serde_json::Deserializer::from_str(raw.get());
    if TextPieces(&mut pieces).deserialize(&mut reader).is_ok() {
        for piece in &pieces {
            append(out, piece);
        }
    }
}

/// Reads the text of a content value into pieces: a string, or a list whose items are strings or
/// `{"text": ...}` parts (a part's `text` read the same way; a part with two `text` members gives
/// nothing). Anything else has no text. A string without escapes is borrowed, not copied.
struct TextPieces<'p, 'de>(&'p mut Vec<Cow<'de, str>>);

impl<'de> DeserializeSeed<'de> for TextPieces<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextPieces<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message content")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<(), E> {
        self.0.push(Cow::Borrowed(text));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.0.push(Cow::Owned(text.to_owned()));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<(), E> {
        self.0.push(Cow::Owned(text));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(ListPiece(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    nothing_in_scalars!(());
}

/// One item of a content list: a string, or a `{"text": ...}` part. Nested lists have no text.
struct ListPiece<'p, 'de>(&'p mut Vec<Cow<'de, str>>);

impl<'de> DeserializeSeed<'de> for ListPiece<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListPiece<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<(), E> {
        TextPieces(self.0).visit_borrowed_str(text)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        TextPieces(self.0).visit_str(text)
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<(), E> {
        TextPieces(self.0).visit_string(text)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut text: Option<Vec<Cow<'de, str>>> = None;
        let mut repeated = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != "text" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let mut pieces = Vec::new();
            map.next_value_seed(TextPieces(&mut pieces))?;
            repeated |= text.replace(pieces).is_some();
        }
        if !repeated {
            self.0.extend(text.unwrap_or_default());
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    nothing_in_scalars!(());
}

/// Appends `text` to `out` on a line of its own; the first piece is borrowed, not copied.
#[allow(clippy::ptr_arg, reason = "a borrowed piece is kept borrowed: the `Cow` itself is needed")]
fn append<'a>(out: &mut Cow<'a, str>, text: &Cow<'a, str>) {
    if text.is_empty() {
        return;
    }
    if out.is_empty() {
        *out = text.clone();
        return;
    }
    let out = out.to_mut();
    out.reserve(text.len().saturating_add(1));
    out.push('\n');
    out.push_str(text);
}

/// Everything a rule may look at, for one request.
pub struct Facts<'a> {
    pub path: &'a str,
    pub headers: &'a Headers,
    pub body: &'a Body<'a>,
    texts: OnceCell<Texts<'a>>,
    /// [`Texts::all`], built only when a rule reads it.
    all: OnceCell<Cow<'a, str>>,
}

impl<'a> Facts<'a> {
    pub fn new(path: &'a str, headers: &'a Headers, body: &'a Body<'a>) -> Self {
        Facts { path, headers, body, texts: OnceCell::new(), all: OnceCell::new() }
    }

    pub fn text(&self, source: TextSource) -> &str {
        let texts = self.texts();
        match source {
            TextSource::System => &texts.system,
            TextSource::LastUser => &texts.last_user,
            TextSource::All => self.all.get_or_init(|| texts.all()),
        }
    }

    fn texts(&self) -> &Texts<'a> {
        self.texts.get_or_init(|| self.body.texts())
    }

    /// A rough token count of all message text: one token per four bytes, rounded up.
    pub fn token_estimate(&self) -> u64 {
        let bytes = u64::try_from(self.texts().all_len()).unwrap_or(u64::MAX);
        bytes.div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_recognised_with_prefix_and_query() {
        assert_eq!(target("", "/v1/chat/completions").unwrap().endpoint, Endpoint::ChatCompletions);
        assert_eq!(target("", "/v1/completions").unwrap().endpoint, Endpoint::Completions);
        assert_eq!(target("", "/v1/embeddings/").unwrap().endpoint, Endpoint::Embeddings);
        let t = target("/llm", "/llm/v1/responses?trace=1").unwrap();
        assert_eq!((t.endpoint, t.query), (Endpoint::Responses, "?trace=1"));
        assert!(target("", "/v1/models").is_none());
        assert!(target("", "/v2/chat/completions").is_none());
        assert!(target("/llm", "/v1/chat/completions").is_none());
        assert!(target("", "/v1/chat/completions/extra").is_none());
    }

    #[test]
    fn model_span_covers_the_json_string() {
        let body = br#"{ "messages": [{"role":"user","content":"model"}], "model" :  "gpt-\u0034o" , "x": 1}"#;
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.model.value, "gpt-4o");
        assert_eq!(&body[parsed.model.span.clone()], br#""gpt-\u0034o""#);
    }

    #[test]
    fn include_usage_states() {
        let p = parse(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(p.include_usage, IncludeUsage::Requested);
        let p = parse(br#"{"model":"m","stream":true}"#).unwrap();
        assert_eq!(p.include_usage, IncludeUsage::NoOptions { null_span: None });
        let body = br#"{"model":"m","stream_options":null}"#;
        let IncludeUsage::NoOptions { null_span: Some(span) } = parse(body).unwrap().include_usage else { panic!() };
        assert_eq!(&body[span], b"null");
        let body = br#"{"model":"m","stream_options": { "include_usage" : false }}"#;
        let IncludeUsage::Off { span } = parse(body).unwrap().include_usage else { panic!() };
        assert_eq!(&body[span], b"false");
        let body = br#"{"model":"m","stream_options": { }}"#;
        let p = parse(body).unwrap();
        let IncludeUsage::MissingIn { open_brace, empty: true } = p.include_usage else {
            panic!("{:?}", p.include_usage)
        };
        assert_eq!(body[open_brace], b'{');
        let body = br#"{"model":"m","stream_options":{"x":1}}"#;
        assert!(matches!(parse(body).unwrap().include_usage, IncludeUsage::MissingIn { empty: false, .. }));
        assert_eq!(parse(br#"{"model":"m","stream_options":[1]}"#).unwrap().include_usage, IncludeUsage::Unusable);
    }

    #[test]
    fn fields_for_rules_are_read() {
        let body = br#"{"model":"m","stream":true,"user":"u-1","tools":[{"type":"function"}],
            "response_format":{"type":"json_schema","json_schema":{}},"metadata":{"team":"fraud","n":3}}"#;
        let p = parse(body).unwrap();
        assert!(p.stream && p.tools && p.json_mode);
        assert_eq!(p.user.as_deref(), Some("u-1"));
        assert_eq!(p.metadata_value("team").as_deref(), Some("fraud"));
        assert_eq!(p.metadata_value("n").as_deref(), Some("3"));
        assert_eq!(p.metadata_value("absent"), None);

        let p = parse(br#"{"model":"m","stream":false,"tools":[],"response_format":{"type":"text"}}"#).unwrap();
        assert!(!p.stream && !p.tools && !p.json_mode);
        let p = parse(br#"{"model":"m","text":{"format":{"type":"json_object"}}}"#).unwrap();
        assert!(p.json_mode);
        let p = parse(br#"{"model":"m","response_format":["json_object"],"text":[["json_schema"]]}"#).unwrap();
        assert!(!p.json_mode, "arrays are not objects");
    }

    #[test]
    fn bad_bodies_have_clear_errors() {
        assert_eq!(parse(b"").unwrap_err(), BodyError::Empty);
        assert_eq!(parse(b"  \n").unwrap_err(), BodyError::Empty);
        assert_eq!(parse(b"[1]").unwrap_err(), BodyError::NotObject);
        assert_eq!(parse(b"{\"model\": \"a\xff\"}").unwrap_err(), BodyError::NotUtf8(12));
        assert!(matches!(parse(b"{\"model\": ").unwrap_err(), BodyError::NotJson(_)));
        assert!(matches!(parse(br#"{"model":"a"} trailing"#).unwrap_err(), BodyError::NotJson(_)));
        assert_eq!(parse(br#"{"messages":[]}"#).unwrap_err(), BodyError::MissingModel);
        assert_eq!(parse(br#"{"model":null}"#).unwrap_err(), BodyError::MissingModel);
        assert_eq!(parse(br#"{"model":42}"#).unwrap_err(), BodyError::ModelNotString);
        let dup = parse(br#"{"model":"a","model":"b"}"#).unwrap_err();
        assert!(matches!(&dup, BodyError::NotJson(m) if m.contains("duplicate field `model`")), "{dup:?}");
    }

    #[test]
    fn chat_texts_by_role() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"You review fraud."},
            {"role":"user","content":"first question"},
            {"role":"assistant","content":"an answer"},
            {"role":"developer","content":[{"type":"text","text":"be brief"}]},
            {"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"question \u00e9"}]}
        ]}"#;
        let p = parse(body).unwrap();
        let t = p.texts();
        assert_eq!(t.system, "You review fraud.\nbe brief");
        assert_eq!(t.last_user, "second\nquestion é");
        assert_eq!(t.all_len(), t.all().len());
        assert_eq!(t.all(), "You review fraud.\nbe brief\nfirst question\nan answer\nsecond\nquestion é");
    }

    #[test]
    fn list_items_that_are_not_messages_are_skipped() {
        // Not objects, a role that is not a string, a repeated field: none of them is a message,
        // and none of them stops the others from being read. Escapes are read as text.
        let body = br#"{"model":"m","messages":[
            5, "text", [1, {"role":"user"}], null, true,
            {"role":5,"content":"numeric role"},
            {"role":"user","content":"twice","role":"user"},
            {"role":"system","content":null,"extra":{"role":"user","content":"nested"}},
            {"role":"u\u0073er","content":"line \"one\"\n\u00e9"},
            {"role":null,"content":"no role"}
        ]}"#;
        let t = parse(body).unwrap().texts();
        assert_eq!(t.system, "");
        assert_eq!(t.last_user, "line \"one\"\né");
        assert_eq!(t.all(), "no role\nline \"one\"\né");
        // A list of items none of which has a role is not a message list: its strings are the text.
        let t = parse(br#"{"model":"m","input":[{"content":"a"},"b"]}"#).unwrap().texts();
        assert_eq!(t.last_user, "b");
    }

    #[test]
    fn message_text_is_read_in_the_same_pass_and_borrowed_when_whole() {
        let body =
            br#"{"model":"m","messages":[{"role":"system","content":"rules"},{"role":"user","content":"plain"}]}"#;
        let p = parse(body).unwrap();
        let t = p.texts();
        assert!(matches!((&t.system, &t.last_user), (Cow::Borrowed("rules"), Cow::Borrowed("plain"))), "{t:?}");
        // Values that are not lists are no message lists, and no parse errors.
        for messages in [r#"{"role":"user","content":"x"}"#, r#""x""#, "7", "true", "null", "[[]]"] {
            let body = format!(r#"{{"model":"m","messages":{messages}}}"#);
            let p = parse(body.as_bytes()).unwrap();
            assert_eq!(p.texts(), Texts::default(), "{messages}");
        }
        // Parts: nested text lists count, a part with two `text` members gives nothing, nested
        // lists and other values have no text.
        let body = br#"{"model":"m","messages":[{"role":"user","content":[
            {"text":["a",{"text":"b"}]},{"text":"x","text":"y"},[["c"]],{"text":{"text":"d"}},5,"e\u0066"]}]}"#;
        let p = parse(body).unwrap();
        assert_eq!(p.texts().last_user, "a\nb\nef");
    }

    #[test]
    fn completions_embeddings_and_responses_texts() {
        let t = parse(br#"{"model":"m","prompt":"say hi"}"#).unwrap().texts();
        assert_eq!((&*t.last_user, &*t.all()), ("say hi", "say hi"));
        let t = parse(br#"{"model":"m","input":["a","b"]}"#).unwrap().texts();
        assert_eq!(t.last_user, "a\nb");
        let body = br#"{"model":"m","instructions":"sys","input":[
            {"role":"user","content":[{"type":"input_text","text":"old"}]},
            {"type":"function_call_output","output":"{}"},
            {"role":"user","content":"new"}]}"#;
        let t = parse(body).unwrap().texts();
        assert_eq!((&*t.system, &*t.last_user, &*t.all()), ("sys", "new", "sys\nold\nnew"));
    }

    #[test]
    fn token_estimate_is_bytes_over_four() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"abcdefghi"}]}"#;
        let p = parse(body).unwrap();
        let no_headers = Headers::default();
        let facts = Facts::new("/v1/chat/completions", &no_headers, &p);
        assert_eq!(facts.token_estimate(), 3);
    }
}
