//! Extracting token usage from an upstream response object.

use serde_json::Value;

use super::pricing::TokenUsage;

fn count(v: Option<&Value>) -> Result<Option<i64>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(|x| *x >= 0).map(Some).ok_or(()),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .ok()
            .filter(|x| *x >= 0)
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

/// Reads a `usage` object (Responses or Chat spelling). Returns `None` when it is
/// missing, malformed, or internally inconsistent (total ≠ input + output, or
/// cached + cache writes above input): such usage is not billable.
pub fn parse_usage(usage: &Value) -> Option<TokenUsage> {
    let obj = usage.as_object()?;
    let input = count(obj.get("input_tokens").or_else(|| obj.get("prompt_tokens"))).ok()??;
    let output = count(
        obj.get("output_tokens")
            .or_else(|| obj.get("completion_tokens")),
    )
    .ok()??;
    let details_in = obj
        .get("input_tokens_details")
        .or_else(|| obj.get("prompt_tokens_details"));
    let details_out = obj
        .get("output_tokens_details")
        .or_else(|| obj.get("completion_tokens_details"));
    let cached = count(
        obj.get("cached_input_tokens")
            .or_else(|| details_in.and_then(|d| d.get("cached_tokens"))),
    )
    .ok()?
    .unwrap_or(0);
    let cache_write = count(
        obj.get("cache_write_tokens")
            .or_else(|| details_in.and_then(|d| d.get("cache_write_tokens"))),
    )
    .ok()?
    .unwrap_or(0);
    let reasoning = count(
        details_out
            .and_then(|d| d.get("reasoning_tokens"))
            .or_else(|| obj.get("reasoning_tokens")),
    )
    .ok()?
    .unwrap_or(0);
    let total = count(obj.get("total_tokens"))
        .ok()?
        .unwrap_or(input + output);
    if total != input + output || cached + cache_write > input {
        return None;
    }
    Some(TokenUsage {
        input,
        cached_input: cached,
        cache_write,
        output,
        reasoning,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_responses_usage() {
        let u = parse_usage(
            &json!({"input_tokens":120,"input_tokens_details":{"cached_tokens":64},
            "output_tokens":30,"output_tokens_details":{"reasoning_tokens":21},"total_tokens":150}),
        )
        .expect("valid");
        assert_eq!(
            (u.input, u.cached_input, u.output, u.reasoning, u.total),
            (120, 64, 30, 21, 150)
        );
    }

    #[test]
    fn rejects_inconsistent_or_malformed_usage() {
        assert!(
            parse_usage(&json!({"input_tokens":1,"output_tokens":1,"total_tokens":5})).is_none()
        );
        assert!(parse_usage(&json!({"input_tokens":1.5,"output_tokens":1})).is_none());
        assert!(parse_usage(&json!({"input_tokens":10,"input_tokens_details":{"cached_tokens":11},"output_tokens":1})).is_none());
        assert!(parse_usage(&json!({"output_tokens":1})).is_none());
        assert!(parse_usage(&json!(null)).is_none());
    }
}
