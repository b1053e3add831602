//! Typed errors of the core. Messages are one line, name the offending field, and have no final
//! period.

use thiserror::Error;

/// A model shape that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    #[error("{field} must be at least 1 (got {value})")]
    Zero { field: &'static str, value: u64 },
    #[error("{field}: {reason}")]
    Inconsistent { field: &'static str, reason: String },
    #[error("{field}: size overflows (the product of the dimensions is too large to count)")]
    Overflow { field: &'static str },
    #[error(
        "unknown target module `{name}` (peft: target modules not found in the base model); the model has: {available}"
    )]
    UnknownTarget { name: String, available: String },
    #[error("targets: no module matched `{spec}`")]
    NoTargets { spec: String },
}

/// A count or byte total that does not fit the integer type it is reported in.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what}: count overflows u64")]
pub struct CountError {
    pub what: &'static str,
}

/// A regime specification that cannot be built or applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegimeError {
    #[error("regime spec is empty")]
    EmptySpec,
    #[error("regime `{regime}`: option `{item}` is not of the form key=value")]
    MalformedOption { regime: String, item: String },
    #[error("regime `{regime}`: option `{key}` given twice")]
    DuplicateOption { regime: String, key: String },
    #[error("regime `{regime}`: unknown option `{key}` (known: {known})")]
    UnknownOption {
        regime: String,
        key: String,
        known: String,
    },
    #[error("regime `{regime}`: option `{key}`: invalid value `{value}` (expected {expected})")]
    InvalidOption {
        regime: String,
        key: String,
        value: String,
        expected: String,
    },
    // The cause is part of the one-line message, so it is not also exposed as `source()`
    // (which would make `{:#}` print it twice).
    #[error("regime `{regime}`: {cause}")]
    Shape { regime: String, cause: ShapeError },
    #[error("regime `{regime}`: {cause}")]
    Count { regime: String, cause: CountError },
}

/// A registry that cannot be assembled, or a name it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    #[error("regime `{name}` is registered twice")]
    Duplicate { name: String },
    #[error("unknown regime `{name}` (registered: {known})")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Regime(#[from] RegimeError),
}

/// A name that is not one of a setting's values (`--precision fp8`, `bias=some`). Every `FromStr`
/// of a named setting returns it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} `{value}` (expected {expected})")]
pub struct UnknownName {
    /// What was being named: `precision`, `optimizer`, `dtype`, ...
    pub what: &'static str,
    pub value: String,
    /// The accepted names, as a list for the message.
    pub expected: String,
}

/// A `targets=` list that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetSpecError {
    #[error("an empty target list")]
    Empty,
    #[error("`{list}` has an empty module name")]
    EmptyName { list: String },
}

/// A memory setting outside the range that keeps every byte count exact and meaningful.
/// `setting` is the CLI flag's name without `--`, which is also the key of an experiment's
/// `[memory]` table, so each caller can name the field its user wrote.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("--{setting}: {problem}")]
pub struct SettingsError {
    pub setting: &'static str,
    pub problem: SettingProblem,
}

/// What is wrong with one memory setting (the message without the setting's name).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SettingProblem {
    #[error("{value} is out of range (1 to {max})")]
    OutOfRange { value: u64, max: u64 },
    #[error("{value} is not a probability in [0, 1)")]
    NotAProbability { value: f64 },
    #[error("{value} is not a ZeRO stage (0, 1, 2 or 3)")]
    NotAZeroStage { value: u8 },
    #[error("cannot be combined with {other}")]
    Incompatible { other: &'static str },
}
