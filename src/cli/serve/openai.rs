//! `POST /v1/chat/completions` in OpenAI's format, so that existing OpenAI clients can ask
//! adiff: one user message whose content holds two `input_audio` parts (base64 audio, the
//! first and second recording) and at most one text part, the prompt.
//!
//! What maps where: the text part is `explain --prompt` (no text: tier 3's prompt, or the
//! `tier` field, an adiff extension); `temperature` absent or 0 is greedy decoding (the
//! reference's), above 0 samples with `top_p` and `seed`; `max_tokens` (or
//! `max_completion_tokens`) caps new tokens. System and developer messages are ignored (the
//! model was not trained to follow them); earlier turns, `stream` and `n` > 1 are refused as not
//! yet supported. `usage.prompt_tokens` counts GPT-2's prefix positions (audio and prompt).

use axum::extract::{Request, State};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use super::api::{
    crop_mode, explain_clips, explain_prompts, hear, internal, read_body, sampling_options,
    ApiError, AppState,
};
use super::engine::Outcome;
use crate::audio::AudioSource;
use crate::generate::SamplingOptions;

/// Audio formats an `input_audio` part may name (the container hint for decoding).
const FORMATS: [&str; 5] = ["wav", "mp3", "flac", "ogg", "oga"];

pub async fn chat_completions(
    State(s): State<AppState>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let coming = s.engine.coming();
    let body = read_body(&s, req).await?;
    let request: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("JSON body: {e}")))?;
    let r = request
        .as_object()
        .ok_or_else(|| ApiError::bad("the JSON body must be an object"))?;
    if let Some(m) = r.get("model").and_then(Value::as_str) {
        if m != s.model_name {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!(
                    "model `{m}` is not served here; this server serves `{}`",
                    s.model_name
                ),
            ));
        }
    }
    if r.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad("stream: true is not yet supported"));
    }
    if let Some(n) = r.get("n") {
        if n.as_u64() != Some(1) {
            return Err(ApiError::bad("n: only 1 choice per request is supported"));
        }
    }
    let (audio, text) = user_message(r)?;
    let tier = number(r, "tier")?.map(|t| t as u8);
    let prompts = explain_prompts(&s.prompts, tier, text.as_deref(), None)?;
    let max_tokens = match number(r, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => number(r, "max_tokens")?,
    };
    let temperature = float(r, "temperature")?.unwrap_or(0.0);
    let sample = (temperature > 0.0).then(|| -> Result<SamplingOptions, ApiError> {
        Ok(SamplingOptions {
            temperature,
            top_k: None,
            top_p: float(r, "top_p")?,
            seed: number(r, "seed")?.unwrap_or(0),
        })
    });
    let sample = sample.transpose()?;
    let opts = sampling_options(&s.cfg, sample, max_tokens.map(|n| n as usize))?;
    let crops = [crop_mode(None, None, 0), crop_mode(None, None, 1)];
    let [(c1, s1), (c2, s2)] = hear(&s, audio, crops).await?;
    let done = explain_clips(&s, [c1, c2], [s1, s2], prompts, opts, false, coming).await?;
    let Outcome::Explain {
        answers,
        prefix_positions,
        ..
    } = done.outcome
    else {
        return Err(internal("the model answered another kind of request"));
    };
    let a = answers
        .into_iter()
        .next()
        .ok_or_else(|| internal("no answer"))?;
    let id = s.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Json(json!({
        "id": format!("chatcmpl-adiff-{:x}-{id}", s.created),
        "object": "chat.completion",
        "created": created,
        "model": s.model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": a.explanation},
            "finish_reason": if a.finish == "stop" { "stop" } else { "length" },
            "logprobs": null,
        }],
        "usage": {
            "prompt_tokens": prefix_positions,
            "completion_tokens": a.tokens,
            "total_tokens": prefix_positions + a.tokens,
        },
    })))
}

/// The two recordings of a request, each with the field name its errors give.
type AudioPair = [(String, AudioSource); 2];

/// The last message (a user's): its two audio parts in order, and its text, if any.
fn user_message(
    r: &serde_json::Map<String, Value>,
) -> Result<(AudioPair, Option<String>), ApiError> {
    let messages = r
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad("`messages` must be a non-empty array"))?;
    let mut user = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => {}
            "user" if user.is_none() => user = Some((i, m)),
            "user" | "assistant" | "tool" => {
                return Err(ApiError::bad(
                    "multi-turn conversations are not yet supported: send one user message \
                     with two input_audio parts",
                ))
            }
            other => {
                return Err(ApiError::bad(format!(
                    "messages[{i}]: unknown role `{other}`"
                )))
            }
        }
    }
    let (i, user) = user.ok_or_else(|| ApiError::bad("no user message"))?;
    let parts = match user.get("content") {
        Some(Value::Array(parts)) => parts.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::bad(format!(
                "messages[{i}].content is text only: give an array with two input_audio parts \
                 (and a text part for the prompt)"
            )))
        }
        _ => return Err(ApiError::bad(format!("messages[{i}].content is missing"))),
    };
    let mut audio = Vec::new();
    let mut texts = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(
                part.get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::bad(format!("{at}.text must be a string")))?
                    .to_string(),
            ),
            Some("input_audio") => audio.push(input_audio(part, &at, audio.len())?),
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "{at}: part type `{other}` is not supported (text and input_audio are)"
                )))
            }
            None => return Err(ApiError::bad(format!("{at} has no `type`"))),
        }
    }
    let count = audio.len();
    let audio: [(String, AudioSource); 2] = audio.try_into().map_err(|_| {
        ApiError::bad(format!(
            "messages[{i}] holds {count} input_audio parts: give exactly two, the recordings to \
             compare"
        ))
    })?;
    let text = texts.join("\n");
    Ok((audio, (!text.trim().is_empty()).then_some(text)))
}

/// One `{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}` part.
fn input_audio(part: &Value, at: &str, index: usize) -> Result<(String, AudioSource), ApiError> {
    let inner = part
        .get("input_audio")
        .ok_or_else(|| ApiError::bad(format!("{at}.input_audio is missing")))?;
    let data = inner
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad(format!("{at}.input_audio.data must be base64 text")))?;
    let format = inner
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("wav")
        .to_ascii_lowercase();
    if !FORMATS.contains(&format.as_str()) {
        return Err(ApiError::bad(format!(
            "{at}.input_audio.format `{format}`: give one of {}",
            FORMATS.join(", ")
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ApiError::bad(format!("{at}.input_audio.data is not base64: {e}")))?;
    let field = format!("audio{}", index + 1);
    Ok((
        field,
        AudioSource::Memory {
            name: format!("input_audio_{}.{format}", index + 1).into(),
            bytes: bytes.into(),
        },
    ))
}

/// A non-negative integer field, if present.
fn number(r: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match r.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::bad(format!("`{key}` must be a non-negative integer"))),
    }
}

/// A number field, if present.
fn float(r: &serde_json::Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match r.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::bad(format!("`{key}` must be a number"))),
    }
}
