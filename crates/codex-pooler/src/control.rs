//! Control-plane operations shared by the command line, demo mode and (later)
//! the admin console: validation and secret handling around the store calls.
//! Raw secrets are returned once to the caller and never stored.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use serde_json::Value;

use crate::crypto::{KEY_VERSION, SecretBox};
use crate::domain::jwt::decode_claims;
use crate::domain::keys::{self, API_KEY_KIND, OPERATOR_TOKEN_KIND};
use crate::runtime::UpstreamSecret;
use crate::store::{
    AuditActor, ImportVia, ImportedIdentity, KeyPolicy, NewApiKey, NewIdentity, SealedSecret,
    Store, StoreError,
};

/// Errors of control-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid auth.json: {0}")]
    InvalidAuthJson(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("password hashing failed")]
    PasswordHash,
}

/// Hashes an operator password with argon2id.
pub fn hash_password(password: &str) -> Result<String, ControlError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ControlError::PasswordHash)
}

/// A random password for first-run and temporary credentials.
pub fn generate_password() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Creates an operator; returns its id.
pub async fn create_operator(
    store: &Store,
    actor: &AuditActor,
    email: &str,
    password: &str,
    role: &str,
) -> Result<String, ControlError> {
    let email = email.trim();
    if !email.contains('@') || email.len() > 254 {
        return Err(ControlError::InvalidInput(
            "email must be an address like name@example.com".into(),
        ));
    }
    if password.chars().count() < 12 {
        return Err(ControlError::InvalidInput(
            "password must be at least 12 characters".into(),
        ));
    }
    if role != "owner" && role != "admin" {
        return Err(ControlError::InvalidInput(
            "role must be owner or admin".into(),
        ));
    }
    let hash = hash_password(password)?;
    Ok(store
        .create_operator(actor, email, &hash, role, false)
        .await?)
}

/// Creates an operator token for the operator with `email`; returns the raw token (shown once).
pub async fn create_operator_token(
    store: &Store,
    actor: &AuditActor,
    email: &str,
    label: &str,
) -> Result<String, ControlError> {
    let operator = store
        .find_operator_by_email(email)
        .await?
        .ok_or_else(|| ControlError::InvalidInput(format!("no operator with email {email}")))?;
    Ok(issue_operator_token(store, actor, &operator.id, label)
        .await?
        .raw)
}

/// Longest label of an operator token, in characters.
pub const TOKEN_LABEL_MAX: usize = 120;

/// A just-created operator token; `raw` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: String,
    pub raw: String,
    pub prefix: String,
}

/// Checks an operator token's label (trimmed, 1-120 characters, no control
/// characters) and returns it trimmed.
pub fn validate_token_label(label: &str) -> Result<&str, ControlError> {
    let label = label.trim();
    let chars = label.chars().count();
    if chars == 0 {
        return Err(ControlError::InvalidInput(
            "label is required: name the token after where it will be used (1-120 characters); no token was created".into(),
        ));
    }
    if chars > TOKEN_LABEL_MAX {
        return Err(ControlError::InvalidInput(format!(
            "label is {chars} characters long; at most {TOKEN_LABEL_MAX} are allowed; no token was created"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(ControlError::InvalidInput(
            "label must not contain control characters such as line breaks or tabs; no token was created".into(),
        ));
    }
    Ok(label)
}

/// Creates an operator token for the operator with `operator_id`
/// (`operator_token.create`, in the same transaction); returns its id, the
/// raw token (shown once) and its public prefix.
pub async fn issue_operator_token(
    store: &Store,
    actor: &AuditActor,
    operator_id: &str,
    label: &str,
) -> Result<IssuedToken, ControlError> {
    let label = validate_token_label(label)?;
    let token = keys::generate(OPERATOR_TOKEN_KIND);
    let id = store
        .create_operator_token(actor, operator_id, label, &token.prefix, &token.secret_hash)
        .await?;
    Ok(IssuedToken {
        id,
        raw: token.raw,
        prefix: token.prefix,
    })
}

/// Validates a slug: lower-case letters, digits and dashes.
pub fn validate_slug(slug: &str) -> Result<(), ControlError> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ControlError::InvalidInput(
            "slug must be 1-64 characters of a-z, 0-9 and -".into(),
        ))
    }
}

/// Routing strategies a Pool can use.
pub const ROUTING_STRATEGIES: &[&str] = &[
    "bridge_ring",
    "deterministic_rotation",
    "least_recent_success",
    "quota_first",
];

/// Validates routing settings.
pub fn validate_routing(strategy: &str, ring_size: i64) -> Result<(), ControlError> {
    if !ROUTING_STRATEGIES.contains(&strategy) {
        return Err(ControlError::InvalidInput(format!(
            "strategy must be one of {}",
            ROUTING_STRATEGIES.join(", ")
        )));
    }
    if !(1..=64).contains(&ring_size) {
        return Err(ControlError::InvalidInput(
            "ring size must be between 1 and 64".into(),
        ));
    }
    Ok(())
}

/// Parsed and validated `auth.json`.
#[derive(Debug, Clone)]
pub struct ParsedAuthJson {
    pub identity: NewIdentity,
    pub secret: UpstreamSecret,
}

/// Largest accepted `auth.json`.
pub const MAX_AUTH_JSON_BYTES: usize = 64 * 1024;

/// Reads a Codex CLI `auth.json`: tokens present, JWT-shaped, account id known.
pub fn parse_auth_json(text: &str, label: Option<&str>) -> Result<ParsedAuthJson, ControlError> {
    let bad = |m: &str| ControlError::InvalidAuthJson(m.to_owned());
    if text.len() > MAX_AUTH_JSON_BYTES {
        return Err(bad("file is larger than 64 KB"));
    }
    let root: Value = serde_json::from_str(text).map_err(|e| {
        bad(&format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let tokens = root
        .get("tokens")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing \"tokens\" object (is this an API-key login?)"))?;
    let text_field = |name: &str| {
        tokens
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let access_token =
        text_field("access_token").ok_or_else(|| bad("tokens.access_token is missing"))?;
    let refresh_token =
        text_field("refresh_token").ok_or_else(|| bad("tokens.refresh_token is missing"))?;
    let id_token = text_field("id_token");
    let access_claims =
        decode_claims(&access_token).ok_or_else(|| bad("tokens.access_token is not a JWT"))?;
    let id_claims = match &id_token {
        Some(t) => Some(decode_claims(t).ok_or_else(|| bad("tokens.id_token is not a JWT"))?),
        None => None,
    };
    let from_id =
        |f: fn(&crate::domain::jwt::TokenClaims) -> Option<String>| id_claims.as_ref().and_then(f);
    let account_id = text_field("account_id")
        .or_else(|| from_id(|c| c.chatgpt_account_id.clone()))
        .or_else(|| access_claims.chatgpt_account_id.clone())
        .ok_or_else(|| bad("no ChatGPT account id in tokens.account_id or the token claims"))?;
    let email = from_id(|c| c.email.clone()).or_else(|| access_claims.email.clone());
    let plan_type = from_id(|c| c.chatgpt_plan_type.clone())
        .or_else(|| access_claims.chatgpt_plan_type.clone());
    let user_id =
        from_id(|c| c.chatgpt_user_id.clone()).or_else(|| access_claims.chatgpt_user_id.clone());
    let label = label
        .map(str::to_owned)
        .or_else(|| email.clone())
        .unwrap_or_else(|| {
            format!(
                "account {}",
                account_id.chars().take(12).collect::<String>()
            )
        });
    Ok(ParsedAuthJson {
        identity: NewIdentity {
            label,
            email,
            chatgpt_account_id: account_id,
            chatgpt_user_id: user_id,
            plan_type,
            base_url: None,
            auth_base_url: None,
            access_token_expires_at: access_claims.exp.map(|s| s * 1000),
        },
        secret: UpstreamSecret {
            access_token,
            refresh_token,
            id_token,
        },
    })
}

/// Imports a parsed `auth.json` into a Pool, sealing the tokens for the row.
pub async fn import_auth_json(
    store: &Store,
    secret_box: &SecretBox,
    actor: &AuditActor,
    pool_id: &str,
    parsed: &ParsedAuthJson,
) -> Result<ImportedIdentity, ControlError> {
    import_tokens(
        store,
        secret_box,
        actor,
        pool_id,
        parsed,
        ImportVia::AuthJson,
    )
    .await
}

/// Imports parsed tokens into a Pool, saying how they arrived.
pub async fn import_tokens(
    store: &Store,
    secret_box: &SecretBox,
    actor: &AuditActor,
    pool_id: &str,
    parsed: &ParsedAuthJson,
    via: ImportVia<'_>,
) -> Result<ImportedIdentity, ControlError> {
    let plain = serde_json::to_vec(&parsed.secret)
        .map_err(|e| ControlError::InvalidInput(e.to_string()))?;
    let imported = store
        .import_identity_via(actor, pool_id, &parsed.identity, via, |row_id| {
            let (ciphertext, nonce) = secret_box.seal(row_id, &plain).map_err(|e| e.to_string())?;
            Ok(SealedSecret {
                ciphertext,
                nonce,
                key_version: KEY_VERSION,
            })
        })
        .await?;
    Ok(imported)
}

/// Creates an API key; returns (key id, raw key shown once).
pub async fn create_api_key(
    store: &Store,
    actor: &AuditActor,
    pool_id: &str,
    name: &str,
    allowed_models: Option<Vec<String>>,
    expires_at: Option<i64>,
) -> Result<(String, String), ControlError> {
    create_api_key_with(
        store,
        actor,
        pool_id,
        &KeySpec {
            name: name.to_owned(),
            allowed_models,
            expires_at,
            ..KeySpec::default()
        },
    )
    .await
}

/// Everything a new key is created with.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub name: String,
    pub allowed_models: Option<Vec<String>>,
    pub enforced_model: Option<String>,
    pub expires_at: Option<i64>,
    pub policy: KeyPolicy,
}

/// Creates an API key with its models, enforcement and limits in one
/// transaction; returns (key id, raw key shown once).
pub async fn create_api_key_with(
    store: &Store,
    actor: &AuditActor,
    pool_id: &str,
    spec: &KeySpec,
) -> Result<(String, String), ControlError> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 120 {
        return Err(ControlError::InvalidInput(
            "key name must be 1-120 characters".into(),
        ));
    }
    let key = keys::generate(API_KEY_KIND);
    let id = store
        .create_api_key(
            actor,
            &NewApiKey {
                pool_id: pool_id.to_owned(),
                display_name: name.to_owned(),
                key_prefix: key.prefix.clone(),
                key_hash: key.secret_hash.clone(),
                expires_at: spec.expires_at,
                allowed_models: spec.allowed_models.clone(),
                enforced_model: spec.enforced_model.clone(),
                policy: spec.policy.clone(),
            },
        )
        .await?;
    Ok((id, key.raw))
}
