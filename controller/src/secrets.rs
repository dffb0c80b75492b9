//! A cluster-wide Secret watch narrowed by a selector (TLS Secrets, labelled CA bundles)
//! that holds the data only of Secrets some LoadBalancer references: of the others it
//! keeps the resource version, and reads one with a GET once a reference appears.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch as signal};

use crate::material::{SecretData, SecretKey};

struct Entry {
    version: String,
    data: Option<Arc<SecretData>>,
}

/// The pure state of one watch; the driver below feeds it events.
#[derive(Default)]
pub struct CacheState {
    /// `None` until the first render says what is referenced: the initial list keeps all.
    wanted: Option<BTreeSet<SecretKey>>,
    entries: BTreeMap<SecretKey, Entry>,
    /// Keys seen since a (re-)list began; at its end the others are gone.
    relisting: Option<BTreeSet<SecretKey>>,
}

impl CacheState {
    fn wants(&self, key: &SecretKey) -> bool {
        self.wanted.as_ref().is_none_or(|w| w.contains(key))
    }

    /// A Secret was listed or changed. True when a render should look again.
    pub fn apply(&mut self, key: SecretKey, version: String, data: SecretData) -> bool {
        if let Some(seen) = &mut self.relisting {
            seen.insert(key.clone());
        }
        let wanted = self.wants(&key);
        let unchanged = self
            .entries
            .get(&key)
            .is_some_and(|e| e.version == version && (e.data.is_some() || !wanted));
        let data = wanted.then(|| Arc::new(data));
        self.entries.insert(key, Entry { version, data });
        wanted && !unchanged
    }

    pub fn delete(&mut self, key: &SecretKey) -> bool {
        self.entries.remove(key).is_some() && self.wants(key)
    }

    pub fn begin_relist(&mut self) {
        self.relisting = Some(BTreeSet::new());
    }

    /// The list is complete: Secrets it did not name were deleted meanwhile.
    pub fn end_relist(&mut self) -> bool {
        let Some(seen) = self.relisting.take() else {
            return false;
        };
        let before = self.entries.len();
        self.entries.retain(|k, _| seen.contains(k));
        before != self.entries.len() || self.wanted.is_none()
    }

    /// Sets what is referenced: drops the data of the rest, and returns the referenced
    /// Secrets that exist but whose data is not held (to read with a GET).
    pub fn set_wanted(&mut self, wanted: BTreeSet<SecretKey>) -> Vec<SecretKey> {
        let mut missing = Vec::new();
        for (key, entry) in &mut self.entries {
            if !wanted.contains(key) {
                entry.data = None;
            } else if entry.data.is_none() {
                missing.push(key.clone());
            }
        }
        self.wanted = Some(wanted);
        missing
    }

    /// The result of such a GET. The watch may have filled it already, with data at
    /// least as new: then that stays.
    pub fn fill(&mut self, key: &SecretKey, got: Option<(String, SecretData)>) {
        let wanted = self.wants(key);
        match (self.entries.get_mut(key), got) {
            (Some(entry), Some((version, data))) if entry.data.is_none() && wanted => {
                entry.version = version;
                entry.data = Some(Arc::new(data));
            }
            (Some(_), None) => {
                self.entries.remove(key);
            }
            _ => {}
        }
    }

    pub fn get(&self, key: &SecretKey) -> Option<Arc<SecretData>> {
        self.entries.get(key).and_then(|e| e.data.clone())
    }

    /// Secrets whose data is held.
    pub fn held(&self) -> usize {
        self.entries.values().filter(|e| e.data.is_some()).count()
    }
}

fn key_of(secret: &Secret) -> SecretKey {
    SecretKey {
        namespace: secret.namespace().unwrap_or_default(),
        name: secret.name_any(),
    }
}

fn data_of(secret: Secret) -> SecretData {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// One selector-narrowed Secret watch and its cache.
pub struct SecretWatch {
    client: Client,
    /// What the watch selects, checked again on Secrets read by GET.
    accepts: fn(&Secret) -> bool,
    state: Mutex<CacheState>,
    ready: signal::Sender<bool>,
}

impl SecretWatch {
    /// Starts watching Secrets of every namespace that match `selector`.
    pub fn start(
        client: &Client,
        selector: watcher::Config,
        accepts: fn(&Secret) -> bool,
        changed: Arc<Notify>,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            client: client.clone(),
            accepts,
            state: Mutex::new(CacheState::default()),
            ready: signal::channel(false).0,
        });
        let api: Api<Secret> = Api::all(client.clone());
        let stream = watcher(api, selector).default_backoff();
        let driver = this.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                if driver.on_event(item) {
                    changed.notify_one();
                }
            }
        });
        this
    }

    fn state(&self) -> MutexGuard<'_, CacheState> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters more than stopping: keep using them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn on_event(&self, item: Result<watcher::Event<Secret>, watcher::Error>) -> bool {
        let event = match item {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(kind = "Secret", error = %e, "watch error; retrying");
                return false;
            }
        };
        let mut state = self.state();
        match event {
            watcher::Event::Init => {
                state.begin_relist();
                false
            }
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                let key = key_of(&s);
                let version = s.resource_version().unwrap_or_default();
                state.apply(key, version, data_of(s))
            }
            watcher::Event::Delete(s) => state.delete(&key_of(&s)),
            watcher::Event::InitDone => {
                let relevant = state.end_relist();
                self.ready.send_replace(true);
                relevant
            }
        }
    }

    /// Waits for the first complete list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let mut rx = self.ready.subscribe();
        rx.wait_for(|r| *r).await?;
        Ok(())
    }

    pub fn get(&self, key: &SecretKey) -> Option<Arc<SecretData>> {
        self.state().get(key)
    }

    pub fn held(&self) -> usize {
        self.state().held()
    }

    /// Narrows the held data to `wanted`, reading with a GET the referenced Secrets
    /// whose data was dropped before.
    pub async fn want(&self, wanted: BTreeSet<SecretKey>) {
        let missing = self.state().set_wanted(wanted);
        for key in missing {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
            match api.get_opt(&key.name).await {
                Ok(got) => {
                    let got = got
                        .filter(|s| (self.accepts)(s))
                        .map(|s| (s.resource_version().unwrap_or_default(), data_of(s)));
                    self.state().fill(&key, got);
                }
                Err(e) => tracing::warn!(secret = %key, error = %e, "cannot read Secret"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretKey {
        SecretKey {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn data(text: &str) -> SecretData {
        BTreeMap::from([("tls.crt".to_string(), text.as_bytes().to_vec())])
    }

    fn held(state: &CacheState, name: &str) -> Option<String> {
        state
            .get(&key(name))
            .map(|d| String::from_utf8_lossy(&d["tls.crt"]).into_owned())
    }

    #[test]
    fn the_initial_list_keeps_everything_until_references_are_known() {
        let mut s = CacheState::default();
        s.begin_relist();
        assert!(s.apply(key("a"), "1".into(), data("A")));
        assert!(s.apply(key("b"), "1".into(), data("B")));
        assert!(s.end_relist());
        assert_eq!(s.held(), 2);
        assert!(s.set_wanted([key("a")].into()).is_empty());
        assert_eq!(held(&s, "a").as_deref(), Some("A"));
        assert_eq!(held(&s, "b"), None);
        assert_eq!(s.held(), 1);
    }

    #[test]
    fn unreferenced_changes_neither_hold_data_nor_wake_the_render() {
        let mut s = CacheState::default();
        s.set_wanted([key("a")].into());
        assert!(!s.apply(key("b"), "1".into(), data("B")));
        assert!(!s.apply(key("b"), "2".into(), data("B2")));
        assert!(!s.delete(&key("b")));
        assert!(s.apply(key("a"), "1".into(), data("A")));
        // The same version again (a re-list) is no change.
        assert!(!s.apply(key("a"), "1".into(), data("A")));
        assert!(s.apply(key("a"), "2".into(), data("A2")));
        assert_eq!(held(&s, "a").as_deref(), Some("A2"));
        assert!(s.delete(&key("a")));
        assert_eq!(held(&s, "a"), None);
    }

    #[test]
    fn a_new_reference_to_a_known_secret_is_read_once() {
        let mut s = CacheState::default();
        s.set_wanted(BTreeSet::new());
        s.apply(key("b"), "1".into(), data("B"));
        assert_eq!(s.set_wanted([key("b"), key("none")].into()), [key("b")]);
        s.fill(&key("b"), Some(("1".into(), data("B"))));
        assert_eq!(held(&s, "b").as_deref(), Some("B"));
        assert!(s.set_wanted([key("b")].into()).is_empty());
    }

    #[test]
    fn a_read_never_overwrites_what_the_watch_brought_meanwhile() {
        let mut s = CacheState::default();
        s.set_wanted(BTreeSet::new());
        s.apply(key("b"), "1".into(), data("B"));
        s.set_wanted([key("b")].into());
        assert!(s.apply(key("b"), "3".into(), data("B3")));
        s.fill(&key("b"), Some(("2".into(), data("B2"))));
        assert_eq!(held(&s, "b").as_deref(), Some("B3"));
        // Gone when read: gone here too.
        s.set_wanted(BTreeSet::new());
        s.set_wanted([key("b")].into());
        s.fill(&key("b"), None);
        assert_eq!(s.held(), 0);
        assert!(s.set_wanted([key("b")].into()).is_empty());
    }

    #[test]
    fn a_relist_forgets_secrets_deleted_while_the_watch_was_down() {
        let mut s = CacheState::default();
        s.apply(key("a"), "1".into(), data("A"));
        s.apply(key("b"), "1".into(), data("B"));
        s.set_wanted([key("a"), key("b")].into());
        s.begin_relist();
        s.apply(key("a"), "1".into(), data("A"));
        assert!(s.end_relist());
        assert_eq!(held(&s, "a").as_deref(), Some("A"));
        assert_eq!(held(&s, "b"), None);
    }
}
