//! The model catalogue served on `/backend-api/codex/models` (§1.5), written so
//! Codex 0.171 can parse it.

use serde_json::{Value, json};

fn levels() -> Value {
    json!([
        {"effort": "low", "description": "Quick answers with light reasoning"},
        {"effort": "medium", "description": "Balanced reasoning for everyday work"},
        {"effort": "high", "description": "Deeper reasoning for hard problems"},
        {"effort": "xhigh", "description": "Maximum reasoning depth"},
    ])
}

fn model(slug: &str, display: &str, description: &str, priority: u32, context: u64) -> Value {
    json!({
        "slug": slug,
        "display_name": display,
        "description": description,
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": levels(),
        "shell_type": "shell_command",
        "visibility": "list",
        "supported_in_api": true,
        "priority": priority,
        "upgrade": null,
        "availability_nux": null,
        "base_instructions": "You are Codex, a coding agent (served by the upstream simulator).",
        "supports_reasoning_summaries": true,
        "supports_reasoning_summary_parameter": true,
        "default_reasoning_summary": "none",
        "support_verbosity": true,
        "default_verbosity": "low",
        "apply_patch_tool_type": "freeform",
        "web_search_tool_type": "text",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": true,
        "context_window": context,
        "max_context_window": context,
        "auto_compact_token_limit": null,
        "effective_context_window_percent": 95,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
        "minimal_client_version": "0.100.0",
        "prefer_websockets": true,
        "use_responses_lite": false,
        "supports_search_tool": false,
        "service_tiers": [],
        "additional_speed_tiers": [],
        "default_service_tier": null,
    })
}

/// The `{"models":[…]}` document.
pub(crate) fn models() -> Value {
    json!({"models": [
        model("gpt-5.5", "GPT-5.5 (sim)", "Simulated default coding model.", 1, 272_000),
        model("gpt-5.4-mini", "GPT-5.4 mini (sim)", "Simulated small model.", 2, 128_000),
    ]})
}
