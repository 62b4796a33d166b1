//! Request translation for `/v1`: public OpenAI bodies (Responses and Chat
//! Completions) rewritten into the Codex Responses shape the pipeline sends
//! upstream. Pure functions, no I/O; every failure is a client error.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::error::GatewayError;

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::InvalidRequest {
        message: message.into(),
        param: Some(param),
    }
}

fn unsupported(param: &str) -> GatewayError {
    GatewayError::UnsupportedParameter {
        message: format!("'{param}' is not supported by this gateway"),
        param: Some(param.to_owned()),
    }
}

/// The text of a message `content`: a string, or the `text` of its parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn text_part(role: &str, text: &str) -> Value {
    if role == "assistant" {
        json!({"type": "output_text", "text": text})
    } else {
        json!({"type": "input_text", "text": text})
    }
}

fn join_instructions(existing: Option<&Value>, lifted: Vec<String>) -> Value {
    let mut all: Vec<String> = Vec::new();
    if let Some(Value::String(s)) = existing
        && !s.is_empty()
    {
        all.push(s.clone());
    }
    all.extend(lifted.into_iter().filter(|s| !s.is_empty()));
    Value::String(all.join("\n\n"))
}

/// A translated `/v1/responses` request.
#[derive(Debug)]
pub struct ResponsesRequest {
    pub body: Map<String, Value>,
    pub stream: bool,
}

/// A request translated to the Codex Responses dialect: its body goes to the
/// pipeline, the rest stays with the handler that re-encodes the answer.
pub trait Translated {
    fn stream(&self) -> bool;
    fn take_body(&mut self) -> Map<String, Value>;
}

impl Translated for ResponsesRequest {
    fn stream(&self) -> bool {
        self.stream
    }
    fn take_body(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.body)
    }
}

impl Translated for ChatRequest {
    fn stream(&self) -> bool {
        self.stream
    }
    fn take_body(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.body)
    }
}

/// Rewrites a public Responses body: string `input` becomes one user message,
/// system/developer messages are lifted into `instructions`, message content
/// strings become typed parts.
pub fn responses_request(mut body: Map<String, Value>) -> Result<ResponsesRequest, GatewayError> {
    let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
    if body.get("context_management").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("context_management"));
    }
    if let Some(t) = body.get("truncation")
        && !t.is_null()
        && t != "disabled"
    {
        return Err(unsupported("truncation"));
    }
    if let Some(Value::Array(tools)) = body.get("tools")
        && tools.iter().any(|t| t.get("type") == Some(&json!("mcp")))
    {
        return Err(invalid("remote MCP tools are not supported", "tools"));
    }
    let mut lifted = Vec::new();
    let input = match body.remove("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]})],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Value::Object(mut item) = item else {
                    return Err(invalid("input items must be objects", "input"));
                };
                let is_message = match item.get("type").and_then(Value::as_str) {
                    Some("message") => true,
                    None => item.contains_key("role"),
                    Some(_) => false,
                };
                if !is_message {
                    out.push(Value::Object(item));
                    continue;
                }
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("user")
                    .to_owned();
                if role == "system" || role == "developer" {
                    lifted.push(content_text(item.get("content")));
                    continue;
                }
                item.insert("type".into(), json!("message"));
                item.insert("role".into(), json!(role));
                if let Some(Value::String(text)) = item.get("content") {
                    let part = text_part(&role, text);
                    item.insert("content".into(), json!([part]));
                }
                out.push(Value::Object(item));
            }
            out
        }
        Some(_) => return Err(invalid("input must be a string or an array", "input")),
    };
    let instructions = join_instructions(body.get("instructions"), lifted);
    body.insert("instructions".into(), instructions);
    body.insert("input".into(), Value::Array(input));
    Ok(ResponsesRequest { body, stream })
}

/// A translated `/v1/chat/completions` request.
#[derive(Debug)]
pub struct ChatRequest {
    pub body: Map<String, Value>,
    pub stream: bool,
    pub include_usage: bool,
    pub model: String,
}

/// Parameters a Chat client may send that the gateway refuses.
fn check_unsupported(body: &Map<String, Value>) -> Result<(), GatewayError> {
    let present = |name: &str| body.get(name).is_some_and(|v| !v.is_null());
    if let Some(n) = body.get("n")
        && !n.is_null()
        && n.as_u64() != Some(1)
    {
        return Err(unsupported("n"));
    }
    if let Some(v) = body.get("logprobs")
        && !v.is_null()
        && v != &json!(false)
    {
        return Err(unsupported("logprobs"));
    }
    for name in [
        "top_logprobs",
        "stop",
        "seed",
        "logit_bias",
        "audio",
        "prediction",
    ] {
        if present(name) {
            return Err(unsupported(name));
        }
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = body.get(name)
            && !v.is_null()
            && v.as_f64() != Some(0.0)
        {
            return Err(unsupported(name));
        }
    }
    for name in ["functions", "function_call"] {
        if present(name) {
            return Err(unsupported(name));
        }
    }
    Ok(())
}

fn chat_user_part(part: &Value) -> Result<Value, GatewayError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(json!({"type": "input_text",
            "text": part.get("text").and_then(Value::as_str).unwrap_or("")})),
        "image_url" => {
            let image = part.get("image_url");
            let url = image
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("image_url.url must be a string", "messages"))?;
            let detail = image
                .and_then(|i| i.get("detail"))
                .and_then(Value::as_str)
                .unwrap_or("auto");
            Ok(json!({"type": "input_image", "image_url": url, "detail": detail}))
        }
        "file" => {
            let file = part.get("file").and_then(Value::as_object);
            let mut out = Map::new();
            out.insert("type".into(), json!("input_file"));
            for field in ["file_id", "file_data", "filename"] {
                if let Some(v) = file.and_then(|f| f.get(field)).filter(|v| v.is_string()) {
                    out.insert(field.into(), v.clone());
                }
            }
            Ok(Value::Object(out))
        }
        other => Err(invalid(
            format!("message content part type '{other}' is not supported"),
            "messages",
        )),
    }
}

fn chat_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), GatewayError> {
    let mut lifted = Vec::new();
    let mut input = Vec::new();
    let mut custom_calls: HashSet<String> = HashSet::new();
    for message in messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every message needs a role", "messages"))?;
        let content = message.get("content");
        match role {
            "system" | "developer" => lifted.push(content_text(content)),
            "user" => {
                let parts = match content {
                    Some(Value::String(s)) => vec![text_part("user", s)],
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(chat_user_part)
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(invalid("user message content is required", "messages")),
                };
                input.push(json!({"type": "message", "role": "user", "content": parts}));
            }
            "assistant" => {
                let text = content_text(content);
                if !text.is_empty() {
                    input.push(json!({"type": "message", "role": "assistant",
                        "content": [text_part("assistant", &text)]}));
                }
                if let Some(Value::Array(calls)) = message.get("tool_calls") {
                    for call in calls {
                        input.push(chat_tool_call(call, &mut custom_calls)?);
                    }
                }
            }
            "tool" => {
                let call_id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool messages need a tool_call_id", "messages"))?;
                let kind = if custom_calls.contains(call_id) {
                    "custom_tool_call_output"
                } else {
                    "function_call_output"
                };
                input.push(json!({"type": kind, "call_id": call_id,
                    "output": content_text(content)}));
            }
            other => {
                return Err(invalid(
                    format!("message role '{other}' is not supported"),
                    "messages",
                ));
            }
        }
    }
    Ok((lifted, input))
}

fn chat_tool_call(call: &Value, custom_calls: &mut HashSet<String>) -> Result<Value, GatewayError> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tool_calls need an id", "messages"))?;
    match call
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function")
    {
        "custom" => {
            custom_calls.insert(id.to_owned());
            let custom = call.get("custom");
            Ok(json!({"type": "custom_tool_call", "call_id": id,
                "name": custom.and_then(|c| c.get("name")).and_then(Value::as_str).unwrap_or(""),
                "input": custom.and_then(|c| c.get("input")).and_then(Value::as_str).unwrap_or("")}))
        }
        _ => {
            let function = call.get("function");
            Ok(json!({"type": "function_call", "call_id": id,
                "name": function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or(""),
                "arguments": function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("")}))
        }
    }
}

fn chat_tool(tool: &Value) -> Result<Value, GatewayError> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {
            let f = tool
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| invalid("function tools need a function object", "tools"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("function tools need a name", "tools"))?;
            let mut out = Map::new();
            out.insert("type".into(), json!("function"));
            out.insert("name".into(), json!(name));
            if let Some(d) = f.get("description").filter(|d| d.is_string()) {
                out.insert("description".into(), d.clone());
            }
            let parameters = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            out.insert("parameters".into(), parameters);
            out.insert(
                "strict".into(),
                json!(f.get("strict").and_then(Value::as_bool).unwrap_or(false)),
            );
            Ok(Value::Object(out))
        }
        Some("custom") => {
            let c = tool
                .get("custom")
                .and_then(Value::as_object)
                .ok_or_else(|| invalid("custom tools need a custom object", "tools"))?;
            let mut out = c.clone();
            out.insert("type".into(), json!("custom"));
            if !out.get("name").is_some_and(Value::is_string) {
                return Err(invalid("custom tools need a name", "tools"));
            }
            Ok(Value::Object(out))
        }
        _ => Err(invalid(
            "only function and custom tools are supported",
            "tools",
        )),
    }
}

fn chat_tool_choice(choice: &Value) -> Value {
    match choice.get("type").and_then(Value::as_str) {
        Some("function") => json!({"type": "function",
            "name": choice.pointer("/function/name").cloned().unwrap_or(Value::Null)}),
        Some("custom") => json!({"type": "custom",
            "name": choice.pointer("/custom/name").cloned().unwrap_or(Value::Null)}),
        Some("allowed_tools") => {
            let inner = choice.get("allowed_tools");
            let tools: Vec<Value> = inner
                .and_then(|i| i.get("tools"))
                .and_then(Value::as_array)
                .map(|list| list.iter().map(chat_tool_choice).collect())
                .unwrap_or_default();
            json!({"type": "allowed_tools",
                "mode": inner.and_then(|i| i.get("mode")).cloned().unwrap_or(json!("auto")),
                "tools": tools})
        }
        _ => choice.clone(),
    }
}

fn chat_text_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "text" => Some(json!({"type": "text"})),
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let schema = format.get("json_schema")?.as_object()?;
            let mut out = schema.clone();
            out.insert("type".into(), json!("json_schema"));
            Some(Value::Object(out))
        }
        _ => None,
    }
}

/// Rewrites a Chat Completions body into a Responses body.
pub fn chat_request(body: Map<String, Value>) -> Result<ChatRequest, GatewayError> {
    check_unsupported(&body)?;
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_owned(),
        _ => return Err(invalid("model is required", "model")),
    };
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Err(invalid("messages must be an array", "messages"));
    };
    if messages.is_empty() {
        return Err(invalid("messages must not be empty", "messages"));
    }
    let (lifted, input) = chat_messages(messages)?;
    let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
    let include_usage = stream
        && body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("instructions".into(), join_instructions(None, lifted));
    out.insert("input".into(), Value::Array(input));
    let tools = match body.get("tools") {
        Some(Value::Array(tools)) => tools.iter().map(chat_tool).collect::<Result<_, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(invalid("tools must be an array", "tools")),
    };
    out.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) {
        out.insert("tool_choice".into(), chat_tool_choice(choice));
    }
    if let Some(p) = body.get("parallel_tool_calls").filter(|p| p.is_boolean()) {
        out.insert("parallel_tool_calls".into(), p.clone());
    }
    if let Some(effort) = body.get("reasoning_effort").filter(|e| e.is_string()) {
        out.insert("reasoning".into(), json!({"effort": effort}));
    }
    let mut text = Map::new();
    if let Some(format) = body.get("response_format").and_then(chat_text_format) {
        text.insert("format".into(), format);
    }
    if let Some(v) = body.get("verbosity").filter(|v| v.is_string()) {
        text.insert("verbosity".into(), v.clone());
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }
    if let Some(tier) = body.get("service_tier").and_then(Value::as_str) {
        if tier == "ultrafast" {
            return Err(invalid(
                "service_tier 'ultrafast' is not available on chat completions",
                "service_tier",
            ));
        }
        out.insert("service_tier".into(), json!(tier));
    }
    if let Some(key) = body.get("prompt_cache_key").filter(|k| k.is_string()) {
        out.insert("prompt_cache_key".into(), key.clone());
    }
    if let Some(max) = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .filter(|m| m.is_number())
    {
        out.insert("max_output_tokens".into(), max.clone());
    }
    out.insert("stream".into(), json!(stream));
    Ok(ChatRequest {
        body: out,
        stream,
        include_usage,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn string_input_becomes_one_user_message_and_system_text_is_lifted() {
        let r = responses_request(obj(json!({"model": "m", "instructions": "base",
            "input": [{"role": "system", "content": "sys"},
                      {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
                      {"role": "user", "content": "hi"}]})))
        .expect("ok");
        assert_eq!(r.body["instructions"], "base\n\nsys\n\ndev");
        assert_eq!(
            r.body["input"],
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}])
        );
        let r = responses_request(obj(json!({"model": "m", "input": "hello", "stream": true})))
            .expect("ok");
        assert!(r.stream);
        assert_eq!(r.body["input"][0]["content"][0]["text"], "hello");
        assert!(responses_request(obj(json!({"model": "m", "input": 3}))).is_err());
        assert!(responses_request(obj(json!({"model": "m", "tools": [{"type": "mcp"}]}))).is_err());
    }

    #[test]
    fn chat_messages_tools_and_choice_are_translated() {
        let r = chat_request(obj(json!({"model": "m", "reasoning_effort": "high", "max_tokens": 5,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "shell", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "shell"}}})))
        .expect("ok");
        let b = &r.body;
        assert_eq!(b["instructions"], "be brief");
        assert_eq!(b["input"][0]["content"][1]["type"], "input_image");
        assert_eq!(b["input"][1]["type"], "function_call");
        assert_eq!(b["input"][1]["call_id"], "call_1");
        assert_eq!(b["input"][2]["type"], "function_call_output");
        assert_eq!(b["tools"][0]["name"], "shell");
        assert_eq!(b["tools"][0]["strict"], false);
        assert_eq!(
            b["tool_choice"],
            json!({"type": "function", "name": "shell"})
        );
        assert_eq!(b["reasoning"]["effort"], "high");
        assert_eq!(b["max_output_tokens"], 5);
    }

    #[test]
    fn unsupported_chat_parameters_are_named() {
        for (field, value) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("stop", json!(["x"])),
            ("seed", json!(1)),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(1)),
            ("logit_bias", json!({"1": 2})),
        ] {
            let mut body =
                obj(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
            body.insert(field.into(), value);
            match chat_request(body) {
                Err(GatewayError::UnsupportedParameter { param, .. }) => {
                    assert_eq!(param.as_deref(), Some(field))
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let ok = obj(
            json!({"model": "m", "n": 1, "logprobs": false, "messages": [{"role": "user", "content": "x"}]}),
        );
        assert!(chat_request(ok).is_ok());
    }
}
