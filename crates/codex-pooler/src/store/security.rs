//! Records behind an operator's own security settings: the optional TOTP
//! second factor (secret sealed by the caller, never seen here in clear), its
//! one-time recovery codes (SHA-256 only), sign-ins waiting for the second
//! factor (hashed token, five minutes), the operator's list of sessions, and
//! their own API tokens (listed without the hash, revoked, noted when used;
//! creating one is `Store::create_operator_token`).
//! Every change writes its audit event in the same transaction; the checks
//! that make a code usable once (the last used step, a recovery code's
//! `used_at`) are conditions of the UPDATE itself, so two instances racing
//! with the same code cannot both succeed.

use serde::Serialize;
use sqlx::FromRow;

use super::control::insert_audit;
use super::{
    AuditActor, AuditEntry, NewSession, SealedSecret, Store, StoreError, StoreResult, with_pool,
};
use crate::time::{new_id, now_ms};

/// An operator's TOTP enrolment, pending (`enabled_at` unset) or on.
#[derive(Debug, Clone, FromRow)]
pub struct TotpRow {
    pub operator_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub key_version: i64,
    pub enabled_at: Option<i64>,
    pub last_used_step: Option<i64>,
}

/// What an operator's security page shows about the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TotpStatus {
    pub enabled: bool,
    /// A setup was started and waits for its first code.
    pub pending: bool,
    pub recovery_codes_left: i64,
}

/// One of an operator's live sessions (no token hash).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct OperatorSessionRow {
    pub id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One of an operator's API tokens as their security page lists it (never
/// the hash).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct OperatorTokenSummary {
    pub id: String,
    pub label: String,
    #[serde(rename = "prefix")]
    pub token_prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A sign-in waiting for its second factor, with what completing it needs.
#[derive(Debug, Clone, FromRow)]
pub struct LoginChallengeRow {
    pub operator_id: String,
    pub email: String,
    pub must_change_password: bool,
    pub expires_at: i64,
    pub secret_ciphertext: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub last_used_step: Option<i64>,
}

/// The second factor that completed a sign-in.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A TOTP code of this step.
    Totp { step: i64 },
    /// The recovery code with this hash.
    RecoveryCode { code_hash: &'a str },
}

/// What completing a sign-in with a second factor did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorOutcome {
    /// A session was opened.
    SignedIn { session_id: String },
    /// The sign-in step expired, was completed already, or TOTP was turned
    /// off meanwhile; nothing was written.
    ChallengeGone,
    /// The code (its step) or recovery code was used already; nothing was
    /// written.
    CodeUsed,
}

/// Wrong codes a sign-in challenge survives before the password is asked
/// for again (a 6-digit code must not be guessable by retrying).
pub const MAX_SECOND_FACTOR_ATTEMPTS: i64 = 5;

/// Wrong codes an operator may try across sign-ins in
/// [`SECOND_FACTOR_WINDOW_MS`] before the password step refuses to start
/// another (so retrying the password cannot buy unlimited guesses).
pub const MAX_RECENT_SECOND_FACTOR_FAILURES: i64 = 10;
pub const SECOND_FACTOR_WINDOW_MS: i64 = 15 * 60 * 1000;

impl Store {
    /// The operator's TOTP row, pending or enabled.
    pub async fn find_totp(&self, operator_id: &str) -> StoreResult<Option<TotpRow>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, TotpRow>(
            "SELECT operator_id, secret_ciphertext, secret_nonce, key_version, enabled_at, last_used_step
             FROM operator_totp WHERE operator_id = $1")
            .bind(operator_id).fetch_optional(pool).await)?)
    }

    /// Whether TOTP is on, a setup is pending, and how many recovery codes
    /// are unused.
    pub async fn totp_status(&self, operator_id: &str) -> StoreResult<TotpStatus> {
        let (enabled, pending, left): (i64, i64, i64) = with_pool!(self, pool => sqlx::query_as(
            "SELECT
               (SELECT COUNT(*) FROM operator_totp WHERE operator_id = $1 AND enabled_at IS NOT NULL),
               (SELECT COUNT(*) FROM operator_totp WHERE operator_id = $1 AND enabled_at IS NULL),
               (SELECT COUNT(*) FROM operator_recovery_codes WHERE operator_id = $1 AND used_at IS NULL)")
            .bind(operator_id).fetch_one(pool).await)?;
        Ok(TotpStatus {
            enabled: enabled > 0,
            pending: pending > 0,
            recovery_codes_left: if enabled > 0 { left } else { 0 },
        })
    }

    /// Stores a new pending TOTP secret (`auth.totp_setup`), replacing an
    /// earlier pending one. Refused with `Conflict` while TOTP is on: a second
    /// authenticator is enrolled only after turning the first off.
    pub async fn start_totp_setup(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        sealed: &SealedSecret,
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let written = sqlx::query(
                "INSERT INTO operator_totp (operator_id, secret_ciphertext, secret_nonce, key_version, enabled_at, last_used_step, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, NULL, NULL, $5, $5)
                 ON CONFLICT (operator_id) DO UPDATE SET
                   secret_ciphertext = excluded.secret_ciphertext, secret_nonce = excluded.secret_nonce,
                   key_version = excluded.key_version, last_used_step = NULL,
                   created_at = excluded.created_at, updated_at = excluded.updated_at
                 WHERE operator_totp.enabled_at IS NULL")
                .bind(operator_id).bind(&sealed.ciphertext).bind(&sealed.nonce).bind(sealed.key_version).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if written != 1 {
                return Err(StoreError::Conflict("an enabled two-factor sign-in"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.totp_setup", target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"fields": ["totp_secret"], "status": "pending"}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Turns the pending setup whose sealed secret has `nonce` on
    /// (`auth.totp_enrolled`): the verified code's step counts as used, and
    /// `recovery_hashes` replace any earlier recovery codes. `NotFound` when
    /// that setup is no longer pending (enabled meanwhile, or replaced by a
    /// newer setup whose secret the code was not checked against).
    pub async fn enable_totp(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        nonce: &[u8],
        step: i64,
        recovery_hashes: &[String],
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE operator_totp SET enabled_at = $3, last_used_step = $4, updated_at = $3
                 WHERE operator_id = $1 AND secret_nonce = $2 AND enabled_at IS NULL")
                .bind(operator_id).bind(nonce).bind(now).bind(step)
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound("pending two-factor setup"));
            }
            sqlx::query("DELETE FROM operator_recovery_codes WHERE operator_id = $1")
                .bind(operator_id).execute(&mut *tx).await?;
            for hash in recovery_hashes {
                sqlx::query(
                    "INSERT INTO operator_recovery_codes (id, operator_id, code_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(new_id()).bind(operator_id).bind(hash).bind(now)
                    .execute(&mut *tx).await?;
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.totp_enrolled", target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"fields": ["totp"], "recovery_codes": recovery_hashes.len()}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Turns TOTP off (`auth.totp_disabled`): the secret, the recovery codes
    /// and any sign-in waiting for a code go. `NotFound` when it was not on.
    pub async fn disable_totp(&self, actor: &AuditActor, operator_id: &str) -> StoreResult<()> {
        self.remove_totp(actor, operator_id, "auth.totp_disabled")
            .await
    }

    /// The owner (or the command line) turns off another operator's TOTP,
    /// e.g. after a lost authenticator (`operator.totp_reset`).
    pub async fn reset_operator_totp(
        &self,
        actor: &AuditActor,
        operator_id: &str,
    ) -> StoreResult<()> {
        self.remove_totp(actor, operator_id, "operator.totp_reset")
            .await
    }

    async fn remove_totp(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        action: &'static str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query("DELETE FROM operator_totp WHERE operator_id = $1 AND enabled_at IS NOT NULL")
                .bind(operator_id).execute(&mut *tx).await?.rows_affected();
            if removed != 1 {
                return Err(StoreError::NotFound("enabled two-factor sign-in"));
            }
            let codes = sqlx::query("DELETE FROM operator_recovery_codes WHERE operator_id = $1")
                .bind(operator_id).execute(&mut *tx).await?.rows_affected();
            sqlx::query("DELETE FROM login_challenges WHERE operator_id = $1")
                .bind(operator_id).execute(&mut *tx).await?;
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"fields": ["totp"], "recovery_codes_removed": codes}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Whether TOTP is on for the operator (sign-in asks for a code then).
    pub async fn totp_enabled(&self, operator_id: &str) -> StoreResult<bool> {
        let (n,): (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM operator_totp WHERE operator_id = $1 AND enabled_at IS NOT NULL")
            .bind(operator_id).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    /// Records a correct email and password that still needs its second
    /// factor. Not audited: no session exists yet (the completed sign-in is).
    /// Expired challenges of everyone are removed on the way.
    pub async fn create_login_challenge(
        &self,
        operator_id: &str,
        token_hash: &str,
        expires_at: i64,
        ip: Option<&str>,
        user_agent: Option<&str>,
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Kept past expiry for the per-operator count of wrong codes.
            sqlx::query("DELETE FROM login_challenges WHERE expires_at <= $1")
                .bind(now - SECOND_FACTOR_WINDOW_MS).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO login_challenges (token_hash, operator_id, created_at, expires_at, ip, user_agent)
                 VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(token_hash).bind(operator_id).bind(now).bind(expires_at).bind(ip).bind(user_agent)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })
    }

    /// The unused, unexpired challenge with this token hash, of an active
    /// operator whose TOTP is on.
    pub async fn find_login_challenge(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<LoginChallengeRow>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, LoginChallengeRow>(
            "SELECT c.operator_id, o.email, o.must_change_password, c.expires_at,
                    t.secret_ciphertext, t.secret_nonce, t.last_used_step
             FROM login_challenges c
             JOIN operators o ON o.id = c.operator_id
             JOIN operator_totp t ON t.operator_id = c.operator_id
             WHERE c.token_hash = $1 AND c.used_at IS NULL AND c.expires_at > $2
               AND o.status = 'active' AND t.enabled_at IS NOT NULL AND c.attempts < $3")
            .bind(token_hash).bind(now_ms()).bind(MAX_SECOND_FACTOR_ATTEMPTS)
            .fetch_optional(pool).await)?,
        )
    }

    /// Takes one attempt of a live challenge before its code is checked;
    /// returns the attempts left after this one, or `None` when the challenge
    /// is gone, used or spent. Atomic, so parallel guesses cannot share one.
    pub async fn claim_second_factor_attempt(&self, token_hash: &str) -> StoreResult<Option<i64>> {
        let row: Option<(i64,)> = with_pool!(self, pool => sqlx::query_as(
            "UPDATE login_challenges SET attempts = attempts + 1
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND attempts < $3
             RETURNING CAST(attempts AS BIGINT)")
            .bind(token_hash).bind(now_ms()).bind(MAX_SECOND_FACTOR_ATTEMPTS)
            .fetch_optional(pool).await)?;
        Ok(row.map(|(n,)| (MAX_SECOND_FACTOR_ATTEMPTS - n).max(0)))
    }

    /// Audits a sign-in challenge spent on wrong codes.
    pub async fn record_second_factor_failure(
        &self,
        actor: &AuditActor,
        attempts: i64,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.second_factor_failed", target_kind: "operator",
                target_id: actor.id.as_deref(), pool_id: None,
                details: serde_json::json!({"wrong_codes": attempts}),
            }, "failed");
            tx.commit().await?;
            Ok(())
        })
    }

    /// Codes tried without success on the operator's challenges of the last
    /// [`SECOND_FACTOR_WINDOW_MS`].
    pub async fn recent_second_factor_failures(&self, operator_id: &str) -> StoreResult<i64> {
        let row: (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM login_challenges
             WHERE operator_id = $1 AND used_at IS NULL AND created_at > $2")
            .bind(operator_id).bind(now_ms() - SECOND_FACTOR_WINDOW_MS)
            .fetch_one(pool).await)?;
        Ok(row.0)
    }

    /// Whether the operator has a recovery code with this hash: `None` when
    /// not, `Some(used)` when they do.
    pub async fn find_recovery_code(
        &self,
        operator_id: &str,
        code_hash: &str,
    ) -> StoreResult<Option<bool>> {
        let row: Option<(Option<i64>,)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT used_at FROM operator_recovery_codes WHERE operator_id = $1 AND code_hash = $2")
            .bind(operator_id).bind(code_hash).fetch_optional(pool).await)?;
        Ok(row.map(|(used,)| used.is_some()))
    }

    /// Completes a sign-in: consumes the challenge, marks the TOTP step or the
    /// recovery code used, opens the session, and writes `auth.login` (or
    /// `auth.recovery_code_used` when a recovery code was spent), all in one
    /// transaction. A lost race on any of the three conditions writes nothing.
    pub async fn complete_login_challenge(
        &self,
        actor: &AuditActor,
        challenge_hash: &str,
        factor: SecondFactor<'_>,
        new: &NewSession<'_>,
    ) -> StoreResult<SecondFactorOutcome> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let consumed = sqlx::query(
                "UPDATE login_challenges SET used_at = $3
                 WHERE token_hash = $1 AND operator_id = $2 AND used_at IS NULL AND expires_at > $3
                   AND EXISTS (SELECT 1 FROM operator_totp t WHERE t.operator_id = $2 AND t.enabled_at IS NOT NULL)")
                .bind(challenge_hash).bind(new.operator_id).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if consumed != 1 {
                return Ok(SecondFactorOutcome::ChallengeGone);
            }
            let (used, action, details) = match factor {
                SecondFactor::Totp { step } => {
                    let used = sqlx::query(
                        "UPDATE operator_totp SET last_used_step = $2, updated_at = $3
                         WHERE operator_id = $1 AND enabled_at IS NOT NULL
                           AND (last_used_step IS NULL OR last_used_step < $2)")
                        .bind(new.operator_id).bind(step).bind(now)
                        .execute(&mut *tx).await?.rows_affected();
                    (used, "auth.login", serde_json::json!({"method": "password+totp"}))
                }
                SecondFactor::RecoveryCode { code_hash } => {
                    let used = sqlx::query(
                        "UPDATE operator_recovery_codes SET used_at = $3
                         WHERE operator_id = $1 AND code_hash = $2 AND used_at IS NULL")
                        .bind(new.operator_id).bind(code_hash).bind(now)
                        .execute(&mut *tx).await?.rows_affected();
                    let (left,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM operator_recovery_codes WHERE operator_id = $1 AND used_at IS NULL")
                        .bind(new.operator_id).fetch_one(&mut *tx).await?;
                    (used, "auth.recovery_code_used",
                     serde_json::json!({"method": "password+recovery_code", "recovery_codes_left": left}))
                }
            };
            if used != 1 {
                return Ok(SecondFactorOutcome::CodeUsed);
            }
            sqlx::query(
                "INSERT INTO admin_sessions (id, token_hash, operator_id, created_at, expires_at, last_seen_at, ip, user_agent)
                 VALUES ($1, $2, $3, $4, $5, $4, $6, $7)")
                .bind(&id).bind(new.token_hash).bind(new.operator_id).bind(now).bind(new.expires_at)
                .bind(new.ip).bind(new.user_agent)
                .execute(&mut *tx).await?;
            insert_audit!(tx, AuditEntry {
                actor, action, target_kind: "session", target_id: Some(&id), pool_id: None, details,
            });
            tx.commit().await?;
            Ok(SecondFactorOutcome::SignedIn { session_id: id })
        })
    }

    /// The operator's live sessions, newest first.
    pub async fn list_operator_sessions(
        &self,
        operator_id: &str,
    ) -> StoreResult<Vec<OperatorSessionRow>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, OperatorSessionRow>(
            "SELECT id, created_at, last_seen_at, expires_at, ip, user_agent FROM admin_sessions
             WHERE operator_id = $1 AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC, id DESC")
            .bind(operator_id).bind(now_ms()).fetch_all(pool).await)?,
        )
    }

    /// Revokes one live session of `operator_id` (`auth.session_revoked`).
    /// Someone else's session, or one already ended, is `NotFound`: the id
    /// alone reveals nothing about other operators.
    pub async fn revoke_operator_session(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        session_id: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE admin_sessions SET revoked_at = $3
                 WHERE id = $1 AND operator_id = $2 AND revoked_at IS NULL AND expires_at > $3")
                .bind(session_id).bind(operator_id).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if changed != 1 {
                return Err(StoreError::NotFound("active session of yours with this id"));
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.session_revoked", target_kind: "session", target_id: Some(session_id), pool_id: None,
                details: serde_json::json!({}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Revokes every live session of `operator_id` but `keep`
    /// (`auth.sessions_revoked`, one event carrying the count). Nothing is
    /// written when there was none; the count is returned either way.
    pub async fn revoke_other_sessions(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        keep: &str,
    ) -> StoreResult<u64> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revoked = sqlx::query(
                "UPDATE admin_sessions SET revoked_at = $3
                 WHERE operator_id = $1 AND id <> $2 AND revoked_at IS NULL AND expires_at > $3")
                .bind(operator_id).bind(keep).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if revoked == 0 {
                return Ok(0);
            }
            insert_audit!(tx, AuditEntry {
                actor, action: "auth.sessions_revoked", target_kind: "operator", target_id: Some(operator_id), pool_id: None,
                details: serde_json::json!({"count": revoked, "kept_session_id": keep}),
            });
            tx.commit().await?;
            Ok(revoked)
        })
    }

    /// The operator's API tokens, active ones first, newest first.
    pub async fn list_operator_tokens(
        &self,
        operator_id: &str,
    ) -> StoreResult<Vec<OperatorTokenSummary>> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, OperatorTokenSummary>(
            "SELECT id, label, token_prefix, created_at, last_used_at, revoked_at FROM operator_tokens
             WHERE operator_id = $1
             ORDER BY CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END, created_at DESC, id DESC")
            .bind(operator_id).fetch_all(pool).await)?,
        )
    }

    /// Revokes one active API token of `operator_id` (`operator_token.revoke`);
    /// the JSON API refuses it from the next call on (tokens are looked up on
    /// every call, nothing caches them). Someone else's token is `NotFound`,
    /// exactly like an unknown id, so an id reveals nothing about other
    /// operators; one of theirs already revoked is `Refused`.
    pub async fn revoke_operator_token(
        &self,
        actor: &AuditActor,
        operator_id: &str,
        token_id: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revoked: Option<(String, String)> = sqlx::query_as(
                "UPDATE operator_tokens SET revoked_at = $3
                 WHERE id = $1 AND operator_id = $2 AND revoked_at IS NULL
                 RETURNING label, token_prefix")
                .bind(token_id).bind(operator_id).bind(now)
                .fetch_optional(&mut *tx).await?;
            let Some((label, prefix)) = revoked else {
                let (own,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM operator_tokens WHERE id = $1 AND operator_id = $2")
                    .bind(token_id).bind(operator_id).fetch_one(&mut *tx).await?;
                return Err(if own > 0 {
                    StoreError::Refused("this API token was already revoked; nothing was changed")
                } else {
                    StoreError::NotFound("API token of yours with this id")
                });
            };
            insert_audit!(tx, AuditEntry {
                actor, action: "operator_token.revoke", target_kind: "operator_token", target_id: Some(token_id), pool_id: None,
                details: serde_json::json!({"operator_id": operator_id, "label": label, "prefix": prefix}),
            });
            tx.commit().await?;
            Ok(())
        })
    }

    /// Notes that an API token authenticated a call. Not audited.
    pub async fn touch_operator_token(&self, token_id: &str) -> StoreResult<()> {
        with_pool!(self, pool => sqlx::query("UPDATE operator_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(token_id).bind(now_ms()).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
