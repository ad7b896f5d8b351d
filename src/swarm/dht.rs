//! The DHT pointer's trips through the mainline DHT (`manifest::pointer`): put by
//! `publish --dht`, `feed refresh --dht` and `seed`, resolved by `follow magnet:…`.
//! The `mainline` crate speaks BEP 44; every item it returns is checked again here,
//! against the key the user gave, before anything in it is used.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::manifest::pointer::{PointerError, SignedPointer};
use crate::name::DatasetName;

/// How to reach the DHT.
#[derive(Clone, Debug, Default)]
pub struct DhtOptions {
    /// `HOST:PORT` nodes to join through; empty for mainline's public routers. Tests
    /// give a local testnet here.
    pub bootstrap: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot start a DHT node: {0}")]
    Start(std::io::Error),
    #[error("cannot join the DHT through {through}: no node answered")]
    Bootstrap { through: String },
    #[error("the DHT did not take the pointer of `{dataset}` (sequence {seq}): {problem}")]
    Put {
        dataset: String,
        seq: i64,
        problem: String,
    },
    #[error("the DHT holds no pointer of `{dataset}` signed by {key}: the publisher has not run `publish --dht`, or no seeder kept it alive (DHT nodes forget an item after about two hours)")]
    NotFound { dataset: String, key: String },
    #[error(transparent)]
    Pointer(#[from] PointerError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

fn node(opts: &DhtOptions) -> Result<mainline::async_dht::AsyncDht, DhtError> {
    let mut builder = mainline::Dht::builder();
    if !opts.bootstrap.is_empty() {
        builder.bootstrap(&opts.bootstrap);
        // A node on a loopback testnet must not announce a public address.
        if opts.bootstrap.iter().all(|b| b.starts_with("127.")) {
            builder.bind_address(Ipv4Addr::LOCALHOST);
        }
    }
    builder
        .request_timeout(Duration::from_secs(2))
        .build()
        .map(mainline::Dht::as_async)
        .map_err(DhtError::Start)
}

fn through(opts: &DhtOptions) -> String {
    match opts.bootstrap.is_empty() {
        true => "the public routers".into(),
        false => opts.bootstrap.join(", "),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, DhtError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DhtError::Runtime)?;
    Ok(rt.block_on(f))
}

/// Stores the pointer in the DHT; returns how many nodes took it.
pub fn put(pointer: &SignedPointer, opts: &DhtOptions) -> Result<u32, DhtError> {
    let dht = node(opts)?;
    block_on(put_with(&dht, pointer, opts))?
}

async fn put_with(
    dht: &mainline::async_dht::AsyncDht,
    pointer: &SignedPointer,
    opts: &DhtOptions,
) -> Result<u32, DhtError> {
    if !dht.bootstrapped().await {
        return Err(DhtError::Bootstrap {
            through: through(opts),
        });
    }
    let item = mainline::MutableItem::new_signed_unchecked(
        pointer.public_key_bytes(),
        pointer.signature_bytes(),
        &pointer.value(),
        pointer.seq,
        Some(pointer.dataset.as_str().as_bytes()),
    );
    let fail = |problem: String| DhtError::Put {
        dataset: pointer.dataset.to_string(),
        seq: pointer.seq,
        problem,
    };
    match dht.put_mutable(item, None).await {
        Ok(outcome) if outcome.stored_at > 0 => Ok(outcome.stored_at),
        Ok(_) => Err(fail("no node stored it".into())),
        // A node holding the same or a newer item is not a failure of this put: the
        // DHT already points where (or past where) this one does.
        Err(mainline::errors::PutMutableError::Concurrency(
            mainline::errors::ConcurrencyError::NotMostRecent,
        )) => Ok(0),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Puts each pointer every `every` until `stop` resolves: DHT nodes drop items after
/// about two hours, so a seeder keeps its datasets' pointers alive. Failures are
/// reported through `note` and retried at the next turn.
pub async fn keep_alive(
    pointers: Vec<SignedPointer>,
    opts: DhtOptions,
    every: Duration,
    note: impl Fn(String),
) {
    let dht = match node(&opts) {
        Ok(d) => d,
        Err(e) => return note(format!("{e}; the DHT pointers are not kept alive")),
    };
    loop {
        for p in &pointers {
            match put_with(&dht, p, &opts).await {
                Ok(n) => note(format!(
                    "put the DHT pointer of {} (sequence {}) on {n} nodes",
                    p.dataset, p.seq
                )),
                Err(e) => note(e.to_string()),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The newest pointer of `dataset` signed by `public_key` (hex), checked.
pub fn resolve(
    public_key: &str,
    dataset: &DatasetName,
    opts: &DhtOptions,
) -> Result<SignedPointer, DhtError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(public_key, &mut key).map_err(|_| {
        DhtError::Pointer(PointerError::Invalid {
            origin: "the magnet link".into(),
            problem: format!("`{public_key}` is not a public key"),
        })
    })?;
    let dht = node(opts)?;
    let salt = dataset.as_str().as_bytes();
    let item = block_on(async {
        if !dht.bootstrapped().await {
            return Err(DhtError::Bootstrap {
                through: through(opts),
            });
        }
        Ok(dht.get_mutable_most_recent(&key, Some(salt)).await)
    })??;
    let not_found = || DhtError::NotFound {
        dataset: dataset.to_string(),
        key: public_key.to_string(),
    };
    let item = item.ok_or_else(not_found)?;
    if item.key() != &key || item.salt() != Some(salt) {
        return Err(not_found());
    }
    let origin = format!("from the DHT ({dataset}, sequence {})", item.seq());
    Ok(SignedPointer::from_item(
        dataset,
        &key,
        item.seq(),
        item.value(),
        item.signature(),
        &origin,
    )?)
}

/// What `publish` and `feed refresh` did with the dataset's pointer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PointerReport {
    pub path: std::path::PathBuf,
    pub sequence: i64,
    pub urls: Vec<String>,
    /// The link followers give `seedpool follow`.
    pub magnet: String,
    /// Nodes that took it; `None` when it was only written to the store.
    pub stored_at: Option<u32>,
}

/// After the store's feed changed: re-signs the dataset's pointer, and puts it into
/// the DHT when `dht` is given. The caller decides whether there is one to keep (the
/// CLI: when asked, or when the store already keeps one, so it never names a stale feed).
pub fn publish_pointer(
    store_root: &std::path::Path,
    dataset: &DatasetName,
    key: &crate::signing::PublisherKey,
    extra_urls: &[String],
    dht: Option<&DhtOptions>,
) -> Result<PointerReport, DhtError> {
    let path = crate::manifest::pointer::path(store_root, dataset);
    let signed = crate::manifest::pointer::update(store_root, dataset, key, extra_urls)?;
    let stored_at = dht.map(|o| put(&signed, o)).transpose()?;
    Ok(PointerReport {
        path,
        sequence: signed.seq,
        urls: signed.urls.clone(),
        magnet: crate::manifest::pointer::magnet(&signed.public_key, dataset),
        stored_at,
    })
}
