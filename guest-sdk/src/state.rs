//! Keyed state: values kept by the host, scoped to the agent a signal is for (or to the
//! handler, for a service), surviving swaps, traps and restarts.
//!
//! ```no_run
//! # use switchboard_sdk::{Failure, state};
//! let count = state::<i64>("count");
//! let now = count.update(|n| { *n += 1; *n })?;
//! # Ok::<(), Failure>(())
//! ```
//!
//! Reads see the current signal's own writes; the writes of one signal commit together when
//! it is handled without error, and vanish with everything it sent if it fails. Values are
//! stored as JSON, so a value written by one version of a handler reads in the next as long
//! as the type still decodes.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::failure::Failure;
use crate::typed;

/// Where keys live: the host, or (in tests) a map.
pub trait Backend {
    /// The bytes at `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure>;
    /// Sets `key`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Failure>;
    /// Removes `key`; whether it was there.
    fn delete(&self, key: &str) -> Result<bool, Failure>;
    /// Keys starting with `prefix`, in order.
    fn keys(&self, prefix: &str) -> Result<Vec<String>, Failure>;
}

/// The host's keyed state (the `state` interface).
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Backend for Host {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        Ok(crate::wit_state::get(key)?)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Failure> {
        Ok(crate::wit_state::set(key, value)?)
    }
    fn delete(&self, key: &str) -> Result<bool, Failure> {
        Ok(crate::wit_state::delete(key)?)
    }
    fn keys(&self, prefix: &str) -> Result<Vec<String>, Failure> {
        Ok(crate::wit_state::keys(prefix)?)
    }
}

/// A typed view of the value at one key.
#[derive(Debug, Clone)]
pub struct State<T, B = Host> {
    key: String,
    backend: B,
    _value: PhantomData<fn() -> T>,
}

/// The value of type `T` at `key`, in this agent's (or service's) state.
pub fn state<T: Serialize + DeserializeOwned>(key: impl Into<String>) -> State<T> {
    State::with(key, Host)
}

/// The keys of this agent's (or service's) state that start with `prefix`, in order.
pub fn keys(prefix: &str) -> Result<Vec<String>, Failure> {
    Host.keys(prefix)
}

impl<T: Serialize + DeserializeOwned, B: Backend> State<T, B> {
    /// The value at `key` kept in `backend`.
    pub fn with(key: impl Into<String>, backend: B) -> Self {
        Self {
            key: key.into(),
            backend,
            _value: PhantomData,
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, if set; 500 if what is stored does not decode as `T` (a type changed
    /// between versions without a migration).
    pub fn get(&self) -> Result<Option<T>, Failure> {
        match self.backend.get(&self.key)? {
            None => Ok(None),
            Some(bytes) => decode(&self.key, &bytes).map(Some),
        }
    }

    /// The value, or `T::default()` if unset.
    pub fn get_or_default(&self) -> Result<T, Failure>
    where
        T: Default,
    {
        Ok(self.get()?.unwrap_or_default())
    }

    /// Sets the value; 507 past the host's size limits.
    pub fn set(&self, value: &T) -> Result<(), Failure> {
        self.backend
            .set(&self.key, typed::encode(value)?.as_bytes())
    }

    /// Reads the value (or its default), lets `f` change it, writes it back, and returns
    /// what `f` returned.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, Failure>
    where
        T: Default,
    {
        let mut value = self.get_or_default()?;
        let out = f(&mut value);
        self.set(&value)?;
        Ok(out)
    }

    /// Removes the value; whether it was set.
    pub fn delete(&self) -> Result<bool, Failure> {
        self.backend.delete(&self.key)
    }
}

/// Decodes a stored value; a mismatch is the handler's own data, hence 500.
fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::internal(format!(
            "the state at key `{key}` did not decode as {}: {e}",
            crate::short_type_name::<T>()
        ))
        .with_help("a handler that changes a stored type must still read the old shape")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::typed::tests::{Unencodable, assert_unencodable};

    /// Keys in a map, as the host keeps them during one turn.
    #[derive(Default)]
    pub(crate) struct Memory(RefCell<BTreeMap<String, Vec<u8>>>);

    impl Backend for &Memory {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), Failure> {
            if value.len() > 64 {
                return Err(Failure::new(507, "too big"));
            }
            self.0.borrow_mut().insert(key.into(), value.into());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<bool, Failure> {
            Ok(self.0.borrow_mut().remove(key).is_some())
        }
        fn keys(&self, prefix: &str) -> Result<Vec<String>, Failure> {
            let map = self.0.borrow();
            Ok(map
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        }
    }

    #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
    struct Cart {
        items: Vec<String>,
    }

    /// A value reads back as written, is stored as JSON, and is gone after delete.
    #[test]
    fn values_round_trip_as_json() {
        let memory = Memory::default();
        let cart = State::<Cart, _>::with("cart", &memory);
        assert_eq!(cart.key(), "cart");
        assert_eq!(cart.get().unwrap(), None);
        assert_eq!(cart.get_or_default().unwrap(), Cart::default());
        let full = Cart {
            items: vec!["apple".into()],
        };
        cart.set(&full).unwrap();
        assert_eq!(cart.get().unwrap(), Some(full));
        assert_eq!(
            memory.0.borrow()["cart"],
            br#"{"items":["apple"]}"#.to_vec()
        );
        assert!(cart.delete().unwrap());
        assert!(!cart.delete().unwrap());
        assert_eq!(cart.get().unwrap(), None);
    }

    /// `update` starts from the default, writes back the change and returns `f`'s result.
    #[test]
    fn update_reads_changes_and_writes_back() {
        let memory = Memory::default();
        let count = State::<i64, _>::with("count", &memory);
        assert_eq!(
            count
                .update(|n| {
                    *n += 2;
                    *n
                })
                .unwrap(),
            2
        );
        assert_eq!(count.update(|n| *n * 10).unwrap(), 20);
        assert_eq!(count.get().unwrap(), Some(2));
    }

    /// A write the host refuses (507) leaves the old value and reaches the caller as is.
    #[test]
    fn a_failed_write_leaves_the_value_and_passes_the_code_on() {
        let memory = Memory::default();
        let name = State::<String, _>::with("name", &memory);
        name.set(&"ann".to_owned()).unwrap();
        let err = name.update(|n| *n = "x".repeat(100)).unwrap_err();
        assert_eq!(err.code(), 507);
        assert_eq!(name.get().unwrap().as_deref(), Some("ann"));
    }

    /// A stored value that no longer decodes is the handler's 500, naming key and type.
    #[test]
    fn a_stored_value_of_another_shape_is_a_500_naming_key_and_type() {
        let memory = Memory::default();
        (&memory).set("cart", b"42").unwrap();
        let err = State::<Cart, _>::with("cart", &memory).get().unwrap_err();
        assert_eq!(err.code(), 500);
        assert!(
            err.description()
                .starts_with("the state at key `cart` did not decode as Cart"),
            "{err}"
        );
        assert!(err.help().is_some());
    }

    /// Keys list by prefix, in order.
    #[test]
    fn keys_list_by_prefix() {
        let memory = Memory::default();
        for key in ["todo/1", "todo/2", "done/1"] {
            State::<u8, _>::with(key, &memory).set(&1).unwrap();
        }
        assert_eq!((&memory).keys("todo/").unwrap(), ["todo/1", "todo/2"]);
    }

    /// `state::<T>(key)` is a view on the host's state at `key`: making it reads nothing
    /// (the host's import would panic natively).
    #[test]
    fn state_names_a_key_in_the_host_state_without_reading_it() {
        let count = state::<i64>(String::from("count"));
        assert_eq!(count.key(), "count");
    }

    /// A value that does not encode is a 500 and writes nothing, the old value stays.
    #[test]
    fn an_unencodable_value_is_a_500_and_writes_nothing() {
        let memory = Memory::default();
        (&memory).set("v", b"null").unwrap();
        assert_unencodable(State::<Unencodable, _>::with("v", &memory).set(&Unencodable));
        assert_eq!(memory.0.borrow()["v"], b"null".to_vec());
    }

    /// `update` of a value that no longer decodes fails before `f` runs and writes nothing.
    #[test]
    fn update_of_an_undecodable_value_runs_nothing_and_writes_nothing() {
        let memory = Memory::default();
        let runs = std::cell::Cell::new(0);
        let bump = |n: &mut i64| {
            runs.set(runs.get() + 1);
            *n += 1;
        };
        State::<i64, _>::with("fine", &memory).update(bump).unwrap();
        (&memory).set("count", br#""seven""#).unwrap();
        let count = State::<i64, _>::with("count", &memory);
        assert_eq!(count.update(bump).unwrap_err().code(), 500);
        assert_eq!(runs.get(), 1, "f ran on a value that did not decode");
        assert_eq!(memory.0.borrow()["count"], br#""seven""#.to_vec());
    }

    /// Two views on one key see each other's writes (reads see the turn's own writes), and
    /// views on different keys do not.
    #[test]
    fn views_share_a_key_and_only_that_key() {
        let memory = Memory::default();
        let a = State::<String, _>::with("name", &memory);
        let b = State::<String, _>::with("name", &memory);
        let other = State::<String, _>::with("name2", &memory);
        a.set(&"ann".to_owned()).unwrap();
        assert_eq!(b.get().unwrap().as_deref(), Some("ann"));
        assert_eq!(other.get().unwrap(), None);
        assert!(b.delete().unwrap());
        assert_eq!(a.get().unwrap(), None);
    }
}
