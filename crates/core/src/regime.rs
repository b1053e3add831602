//! The `Regime` trait, regime specs (`lora:r=8,targets=q_proj+v_proj`) and the registration record
//! that regime crates submit with `inventory`.

use crate::error::RegimeError;
use crate::plan::TrainingPlan;
use crate::shape::ModelShape;
use std::str::FromStr;

/// A training regime, built from a spec: decides which parameters exist and how they are trained.
pub trait Regime: Send + Sync {
    /// The canonical spec string (name and every option that differs from its default).
    fn spec(&self) -> String;

    /// A short human label for tables (`LoRA r=8`).
    fn label(&self) -> String;

    /// Write the plan for one model into `out`, starting with `out.clear()`: callers reuse one
    /// plan across millions of points, which keeps sweeps free of allocation (the roster tests
    /// that every regime clears).
    fn plan_into(&self, model: &ModelShape, out: &mut TrainingPlan) -> Result<(), RegimeError>;

    /// The plan for one model.
    fn plan(&self, model: &ModelShape) -> Result<TrainingPlan, RegimeError> {
        let mut plan = TrainingPlan::default();
        self.plan_into(model, &mut plan)?;
        Ok(plan)
    }
}

/// Documentation (and the allow-list) of one regime option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDoc {
    pub key: &'static str,
    /// What values look like (`<int>`, `true|false`).
    pub values: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// What a regime crate submits: `inventory::submit! { RegimeRegistration { .. } }`.
/// Const-constructible; `build` is a plain function pointer so options are parsed at run time.
pub struct RegimeRegistration {
    pub name: &'static str,
    pub summary: &'static str,
    pub options: &'static [OptionDoc],
    /// The option that sets the adapter's rank (LoRA's `r`), one of `options`; `None` for a
    /// regime without one. Sweeps over ranks and `fit`'s largest-rank search set this option.
    pub rank_option: Option<&'static str>,
    pub build: fn(&RegimeSpec) -> Result<Box<dyn Regime>, RegimeError>,
}

impl RegimeRegistration {
    /// The documentation of the rank option, when the regime has one.
    pub fn rank_doc(&self) -> Option<&'static OptionDoc> {
        let key = self.rank_option?;
        self.options.iter().find(|doc| doc.key == key)
    }
}

inventory::collect!(RegimeRegistration);

/// A parsed spec: a regime name and `key=value` options in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegimeSpec {
    pub name: String,
    pub options: Vec<(String, String)>,
}

impl FromStr for RegimeSpec {
    type Err = RegimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (s, None),
        };
        if name.is_empty() {
            return Err(RegimeError::EmptySpec);
        }
        let mut options: Vec<(String, String)> = Vec::new();
        for item in rest.into_iter().flat_map(|r| r.split(',')) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((k, v)) = item.split_once('=') else {
                return Err(RegimeError::MalformedOption {
                    regime: name.to_string(),
                    item: item.to_string(),
                });
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(RegimeError::MalformedOption {
                    regime: name.to_string(),
                    item: item.to_string(),
                });
            }
            if options.iter().any(|(key, _)| key == k) {
                return Err(RegimeError::DuplicateOption {
                    regime: name.to_string(),
                    key: k.to_string(),
                });
            }
            options.push((k.to_string(), v.to_string()));
        }
        Ok(RegimeSpec {
            name: name.to_string(),
            options,
        })
    }
}

/// Typed access to a spec's options, checked against the regime's documented keys.
pub struct OptionReader<'a> {
    spec: &'a RegimeSpec,
}

impl<'a> OptionReader<'a> {
    /// Fails on the first key that `docs` does not list.
    pub fn new(spec: &'a RegimeSpec, docs: &[OptionDoc]) -> Result<Self, RegimeError> {
        for (key, _) in &spec.options {
            if !docs.iter().any(|d| d.key == key) {
                return Err(RegimeError::UnknownOption {
                    regime: spec.name.clone(),
                    key: key.clone(),
                    known: if docs.is_empty() {
                        "none".to_string()
                    } else {
                        docs.iter().map(|d| d.key).collect::<Vec<_>>().join(", ")
                    },
                });
            }
        }
        Ok(OptionReader { spec })
    }

    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.spec
            .options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parse `key` with `FromStr`, or return `default` when absent.
    pub fn parse<T: FromStr>(
        &self,
        key: &str,
        default: T,
        expected: &str,
    ) -> Result<T, RegimeError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| self.invalid(key, v, expected)),
        }
    }

    /// A positive integer at most `max`.
    pub fn positive(&self, key: &str, default: u64, max: u64) -> Result<u64, RegimeError> {
        let expected = format!("an integer from 1 to {max}");
        let value: u64 = self.parse(key, default, &expected)?;
        if value == 0 || value > max {
            return Err(self.invalid(key, &value.to_string(), &expected));
        }
        Ok(value)
    }

    /// A non-negative integer at most `max` (0 allowed: "not set" for options that pair up).
    pub fn at_most(&self, key: &str, default: u64, max: u64) -> Result<u64, RegimeError> {
        let expected = format!("an integer from 0 to {max}");
        let value: u64 = self.parse(key, default, &expected)?;
        if value > max {
            return Err(self.invalid(key, &value.to_string(), &expected));
        }
        Ok(value)
    }

    pub fn flag(&self, key: &str, default: bool) -> Result<bool, RegimeError> {
        match self.raw(key) {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(self.invalid(key, v, "true or false")),
        }
    }

    pub fn invalid(&self, key: &str, value: &str, expected: &str) -> RegimeError {
        RegimeError::InvalidOption {
            regime: self.spec.name.clone(),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        let spec: RegimeSpec = "lora:r=16,targets=q_proj+v_proj".parse().unwrap();
        assert_eq!(spec.name, "lora");
        assert_eq!(spec.options.len(), 2);
        assert_eq!("full-ft".parse::<RegimeSpec>().unwrap().options.len(), 0);
        assert_eq!(
            "lora:r".parse::<RegimeSpec>().unwrap_err().to_string(),
            "regime `lora`: option `r` is not of the form key=value"
        );
        assert!(matches!(
            "lora:r=1,r=2".parse::<RegimeSpec>(),
            Err(RegimeError::DuplicateOption { .. })
        ));
    }

    #[test]
    fn unknown_and_invalid_options_name_the_key() {
        const DOCS: &[OptionDoc] = &[OptionDoc {
            key: "r",
            values: "<int>",
            default: "8",
            help: "rank",
        }];
        let spec: RegimeSpec = "lora:rank=8".parse().unwrap();
        assert_eq!(
            OptionReader::new(&spec, DOCS).err().unwrap().to_string(),
            "regime `lora`: unknown option `rank` (known: r)"
        );
        let spec: RegimeSpec = "lora:r=x".parse().unwrap();
        let reader = OptionReader::new(&spec, DOCS).unwrap();
        assert_eq!(
            reader.positive("r", 8, 1 << 20).unwrap_err().to_string(),
            "regime `lora`: option `r`: invalid value `x` (expected an integer from 1 to 1048576)"
        );
    }
}
