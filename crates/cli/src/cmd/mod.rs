pub mod cost;
pub mod estimate;
pub mod fit;
pub mod presets;
pub mod regimes;
pub mod serve;
pub mod sweep;
