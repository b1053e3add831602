//! The registry of regimes linked into the binary. Built from `inventory`; a name registered twice
//! is an error, never a silent pick.

use crate::error::{RegimeError, RegistryError};
use crate::regime::{Regime, RegimeRegistration, RegimeSpec};
use std::collections::BTreeMap;

pub struct Registry {
    by_name: BTreeMap<&'static str, &'static RegimeRegistration>,
}

impl Registry {
    /// Every regime submitted with `inventory` in the linked crates.
    pub fn from_inventory() -> Result<Self, RegistryError> {
        Self::from_registrations(inventory::iter::<RegimeRegistration>)
    }

    pub fn from_registrations(
        registrations: impl IntoIterator<Item = &'static RegimeRegistration>,
    ) -> Result<Self, RegistryError> {
        let mut by_name = BTreeMap::new();
        for reg in registrations {
            if by_name.insert(reg.name, reg).is_some() {
                return Err(RegistryError::Duplicate {
                    name: reg.name.to_string(),
                });
            }
        }
        Ok(Registry { by_name })
    }

    /// Registered names in sorted order.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }

    pub fn registrations(&self) -> impl Iterator<Item = &'static RegimeRegistration> + '_ {
        self.by_name.values().copied()
    }

    pub fn get(&self, name: &str) -> Result<&'static RegimeRegistration, RegistryError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| RegistryError::Unknown {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// Parse a spec string and build the regime it names.
    pub fn build(&self, spec: &str) -> Result<Box<dyn Regime>, RegistryError> {
        let parsed: RegimeSpec = spec.parse()?;
        let reg = self.get(&parsed.name)?;
        (reg.build)(&parsed).map_err(|e: RegimeError| e.into())
    }
}
