//! The bundled price table and the cost formula.
//!
//! Prices are USD per 1M tokens, which is the same number as micro-USD per token.
//! Internally a rate is held in pico-USD per token (micro-USD × 10⁶) so every
//! supported price is an exact integer; costs are summed exactly and rounded
//! half-up to whole micro-USD once, at the end.

use std::collections::HashMap;

use serde_json::Value;

/// The price table compiled into the binary.
pub const BUNDLED_PRICING_JSON: &str = include_str!("../../pricing/pricing.json");

/// Estimated input above this many tokens uses the `long_context` bucket.
pub const LONG_CONTEXT_THRESHOLD_TOKENS: i64 = 272_000;

/// Rates of one (model, tier, bucket), in pico-USD per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub input: i128,
    pub cached_input: i128,
    pub cache_write: Option<i128>,
    pub output: i128,
    pub reasoning: i128,
    pub request_base: i128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Priced(Rates),
    Unavailable,
}

/// Why a request could not be priced, or that it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PricingStatus {
    Priced,
    UnpricedMissingModel,
    UnpricedMissingTier,
    UnpricedAutoTier,
    UnpricedBatchTier,
    UnpricedUnsupportedTier,
    UnpricedUnavailablePriceBucket,
    UnpricedMissingCacheWriteRate,
}

impl PricingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priced => "priced",
            Self::UnpricedMissingModel => "unpriced_missing_model",
            Self::UnpricedMissingTier => "unpriced_missing_tier",
            Self::UnpricedAutoTier => "unpriced_auto_tier",
            Self::UnpricedBatchTier => "unpriced_batch_tier",
            Self::UnpricedUnsupportedTier => "unpriced_unsupported_tier",
            Self::UnpricedUnavailablePriceBucket => "unpriced_unavailable_price_bucket",
            Self::UnpricedMissingCacheWriteRate => "unpriced_missing_cache_write_rate",
        }
    }
}

/// Token counts of one settled request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub output: i64,
    pub reasoning: i64,
    pub total: i64,
}

/// The result of pricing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    pub status: PricingStatus,
    /// Whole micro-USD, rounded half-up; `None` unless `status` is `Priced`.
    pub cost_micros: Option<i64>,
}

/// An in-memory price table: model → canonical tier → bucket.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    pub version: String,
    /// The stored snapshot this table was loaded from, if any.
    pub snapshot_version: Option<i64>,
    models: HashMap<String, HashMap<String, HashMap<String, Bucket>>>,
}

/// Errors reading a price table file.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    #[error("price table is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("price table: {0}")]
    Shape(String),
}

fn rate_picos(value: &Value, field: &str, at: &str) -> Result<Option<i128>, PriceTableError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let usd_per_million = n
                .as_f64()
                .ok_or_else(|| PriceTableError::Shape(format!("{at}.{field} is not a number")))?;
            if !(0.0..1.0e9).contains(&usd_per_million) {
                return Err(PriceTableError::Shape(format!(
                    "{at}.{field} is out of range"
                )));
            }
            Ok(Some((usd_per_million * 1_000_000.0).round() as i128))
        }
        Some(_) => Err(PriceTableError::Shape(format!(
            "{at}.{field} is not a number"
        ))),
    }
}

/// Canonical tier spelling for the table: `fast` is `priority`.
pub fn canonical_tier(tier: &str) -> String {
    let lower = tier.trim().to_ascii_lowercase();
    match lower.as_str() {
        "fast" => "priority".to_owned(),
        "" | "default" => "standard".to_owned(),
        _ => lower,
    }
}

impl PriceTable {
    /// The table bundled with this build.
    pub fn bundled() -> Result<Self, PriceTableError> {
        Self::parse(BUNDLED_PRICING_JSON)
    }

    /// Parses a price table file in the bundled format.
    pub fn parse(text: &str) -> Result<Self, PriceTableError> {
        let root: Value = serde_json::from_str(text)?;
        let version = root
            .get("version")
            .and_then(Value::as_str)
            .ok_or_else(|| PriceTableError::Shape("missing \"version\"".into()))?
            .to_owned();
        let models = root
            .get("models")
            .and_then(Value::as_object)
            .ok_or_else(|| PriceTableError::Shape("missing \"models\" object".into()))?;
        let mut table = PriceTable {
            version,
            snapshot_version: None,
            models: HashMap::new(),
        };
        for (model, tiers) in models {
            let tiers = tiers.as_object().ok_or_else(|| {
                PriceTableError::Shape(format!("models.{model} is not an object"))
            })?;
            let mut by_tier = HashMap::new();
            for (tier, buckets) in tiers {
                let canonical = canonical_tier(tier);
                let buckets = buckets.as_object().ok_or_else(|| {
                    PriceTableError::Shape(format!("models.{model}.{tier} is not an object"))
                })?;
                let mut by_bucket = HashMap::new();
                for (bucket, prices) in buckets {
                    let at = format!("models.{model}.{tier}.{bucket}");
                    if prices.get("available") == Some(&Value::Bool(false)) {
                        by_bucket.insert(bucket.clone(), Bucket::Unavailable);
                        continue;
                    }
                    let input = rate_picos(prices, "input", &at)?
                        .ok_or_else(|| PriceTableError::Shape(format!("{at}.input is missing")))?;
                    let output = rate_picos(prices, "output", &at)?
                        .ok_or_else(|| PriceTableError::Shape(format!("{at}.output is missing")))?;
                    let rates = Rates {
                        input,
                        cached_input: rate_picos(prices, "cached_input", &at)?.unwrap_or(0),
                        cache_write: rate_picos(prices, "cache_write", &at)?,
                        output,
                        reasoning: rate_picos(prices, "reasoning", &at)?.unwrap_or(output),
                        request_base: rate_picos(prices, "request_base", &at)?.unwrap_or(0),
                    };
                    by_bucket.insert(bucket.clone(), Bucket::Priced(rates));
                }
                if by_tier.insert(canonical.clone(), by_bucket).is_some() {
                    return Err(PriceTableError::Shape(format!(
                        "models.{model} lists tier {canonical} twice (fast and priority are the same tier)"
                    )));
                }
            }
            table.models.insert(model.to_ascii_lowercase(), by_tier);
        }
        Ok(table)
    }

    /// How many models the table prices.
    pub fn model_count(&self) -> usize {
        self.models.len()
    }

    /// Finds the model entry: exact (case-insensitive), then by stripping trailing
    /// `-segment`s (dated or variant suffixes) one at a time.
    fn model_entry(&self, model: &str) -> Option<&HashMap<String, HashMap<String, Bucket>>> {
        let mut candidate = model.trim().to_ascii_lowercase();
        for _ in 0..4 {
            if let Some(entry) = self.models.get(&candidate) {
                return Some(entry);
            }
            let (head, _) = candidate.rsplit_once('-')?;
            candidate = head.to_owned();
        }
        None
    }

    /// Prices a request. `requested_tier` is what the client (or key policy) asked
    /// for, `actual_tier` what the upstream reported; the actual tier wins unless
    /// it is absent or `auto`.
    pub fn price(
        &self,
        model: &str,
        requested_tier: Option<&str>,
        actual_tier: Option<&str>,
        usage: &TokenUsage,
    ) -> Priced {
        let unpriced = |status| Priced {
            status,
            cost_micros: None,
        };
        let actual = actual_tier.map(canonical_tier).filter(|t| t != "auto");
        let tier = match actual.or_else(|| requested_tier.map(canonical_tier)) {
            None => "standard".to_owned(),
            Some(t) => t,
        };
        match tier.as_str() {
            "auto" => return unpriced(PricingStatus::UnpricedAutoTier),
            "batch" => return unpriced(PricingStatus::UnpricedBatchTier),
            "standard" | "priority" | "flex" | "ultrafast" | "scale" => {}
            _ => return unpriced(PricingStatus::UnpricedUnsupportedTier),
        }
        let Some(entry) = self.model_entry(model) else {
            return unpriced(PricingStatus::UnpricedMissingModel);
        };
        let Some(buckets) = entry.get(&tier) else {
            return unpriced(PricingStatus::UnpricedMissingTier);
        };
        let bucket_name = if usage.input > LONG_CONTEXT_THRESHOLD_TOKENS {
            "long_context"
        } else {
            "default"
        };
        let rates = match buckets.get(bucket_name) {
            Some(Bucket::Priced(r)) => *r,
            Some(Bucket::Unavailable) | None => {
                return unpriced(PricingStatus::UnpricedUnavailablePriceBucket);
            }
        };
        if usage.cache_write > 0 && rates.cache_write.is_none() {
            return unpriced(PricingStatus::UnpricedMissingCacheWriteRate);
        }
        Priced {
            status: PricingStatus::Priced,
            cost_micros: Some(cost_micros(&rates, usage)),
        }
    }
}

/// The cost formula, exact, rounded half-up to whole micro-USD.
pub fn cost_micros(rates: &Rates, usage: &TokenUsage) -> i64 {
    let input = i128::from(usage.input.max(0));
    let output = i128::from(usage.output.max(0));
    let cached = i128::from(usage.cached_input.max(0)).min(input);
    let cache_write = i128::from(usage.cache_write.max(0));
    let standard_input = (input - cached - cache_write).max(0);
    let reasoning = i128::from(usage.reasoning.max(0)).min(output);
    let standard_output = (output - reasoning).max(0);
    let picos = standard_input * rates.input
        + cached * rates.cached_input
        + cache_write * rates.cache_write.unwrap_or(0)
        + standard_output * rates.output
        + reasoning * rates.reasoning
        + rates.request_base;
    ((picos + 500_000) / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(input: f64, cached: f64, output: f64, reasoning: f64) -> Rates {
        let p = |v: f64| (v * 1_000_000.0).round() as i128;
        Rates {
            input: p(input),
            cached_input: p(cached),
            cache_write: None,
            output: p(output),
            reasoning: p(reasoning),
            request_base: 0,
        }
    }

    #[test]
    fn cost_formula_matches_the_reference_examples() {
        let u = |input, cached, output, reasoning| TokenUsage {
            input,
            cached_input: cached,
            output,
            reasoning,
            total: input + output,
            cache_write: 0,
        };
        assert_eq!(
            cost_micros(&rates(100.0, 0.0, 200.0, 200.0), &u(2, 0, 3, 0)),
            800
        );
        assert_eq!(
            cost_micros(&rates(10.0, 1.0, 20.0, 30.0), &u(100, 40, 12, 3)),
            910
        );
        assert_eq!(
            cost_micros(&rates(0.0, 0.0, 20.0, 70.0), &u(0, 0, 10, 3)),
            350
        );
        assert_eq!(
            cost_micros(&rates(0.0125, 0.0, 0.0, 0.0), &u(1_000_000, 0, 0, 0)),
            12_500
        );
        assert_eq!(
            cost_micros(&rates(20.0, 0.0, 30.0, 30.0), &u(272_001, 0, 2, 0)),
            5_440_080
        );
    }

    #[test]
    fn bundled_table_prices_the_simulator_text_answer() {
        let table = PriceTable::bundled().expect("bundled table parses");
        let usage = TokenUsage {
            input: 120,
            cached_input: 64,
            output: 9,
            total: 129,
            ..Default::default()
        };
        // 56 × 5 + 64 × 0.5 + 9 × 30 = 280 + 32 + 270 = 582 µ$
        let priced = table.price("gpt-5.5", None, None, &usage);
        assert_eq!(
            priced,
            Priced {
                status: PricingStatus::Priced,
                cost_micros: Some(582)
            }
        );
        let fast = table.price("gpt-5.5", Some("fast"), None, &usage);
        assert_eq!(fast.cost_micros, Some(56 * 10 + 64 + 9 * 60));
    }

    #[test]
    fn long_context_uses_its_own_bucket_or_reports_it_unavailable() {
        let table = PriceTable::bundled().expect("parses");
        let usage = TokenUsage {
            input: 272_001,
            output: 2,
            total: 272_003,
            ..Default::default()
        };
        assert_eq!(
            table.price("gpt-5.5", None, None, &usage).cost_micros,
            Some(2_720_010 + 90)
        );
        assert_eq!(
            table
                .price("gpt-5.5", Some("priority"), None, &usage)
                .status,
            PricingStatus::UnpricedUnavailablePriceBucket
        );
    }

    #[test]
    fn each_unpriced_status_is_reported() {
        let table = PriceTable::bundled().expect("parses");
        let usage = TokenUsage {
            input: 10,
            output: 1,
            total: 11,
            ..Default::default()
        };
        let status =
            |model: &str, tier: Option<&str>| table.price(model, tier, None, &usage).status;
        assert_eq!(
            status("no-such-model", None),
            PricingStatus::UnpricedMissingModel
        );
        assert_eq!(
            status("gpt-5.2-codex", Some("priority")),
            PricingStatus::UnpricedMissingTier
        );
        assert_eq!(
            status("gpt-5.5", Some("auto")),
            PricingStatus::UnpricedAutoTier
        );
        assert_eq!(
            status("gpt-5.5", Some("batch")),
            PricingStatus::UnpricedBatchTier
        );
        assert_eq!(
            status("gpt-5.5", Some("turbo")),
            PricingStatus::UnpricedUnsupportedTier
        );
        let writes = TokenUsage {
            cache_write: 5,
            ..usage
        };
        assert_eq!(
            table.price("gpt-5.5", None, None, &writes).status,
            PricingStatus::UnpricedMissingCacheWriteRate
        );
        assert_eq!(status("gpt-5.5-2026-03-01", None), PricingStatus::Priced);
    }
}
