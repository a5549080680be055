//! The servers a run loads: one, or the replicas of one deployment. Each
//! device has a home replica; when it stops answering, the device moves to
//! the next, as a client behind a load balancer would.

/// The addresses loaded and the name the servers know themselves by.
#[derive(Debug, Clone)]
pub struct Servers {
    urls: Vec<String>,
    public: Option<String>,
}

impl Servers {
    /// `urls` (at least one), with `public` when the servers run with a
    /// `serve --public-url` of their own (replicas behind one name).
    pub fn new(urls: &[String], public: Option<&str>) -> anyhow::Result<Self> {
        let mut checked = Vec::with_capacity(urls.len());
        for url in urls {
            checked.push(base_url(url)?);
        }
        anyhow::ensure!(!checked.is_empty(), "--server: give at least one");
        Ok(Self {
            urls: checked,
            public: public.map(base_url).transpose()?,
        })
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// The home replica of device `i`: the devices are spread evenly.
    pub fn home(&self, i: usize) -> usize {
        i % self.urls.len()
    }

    /// The replica after `at`, for a device whose replica stopped answering.
    pub fn next(&self, at: usize) -> usize {
        (at + 1) % self.urls.len()
    }

    /// Where to send a request meant for replica `at`.
    pub fn url(&self, at: usize) -> &str {
        &self.urls[at % self.urls.len()]
    }

    /// The URL a DPoP proof names for `path` sent to replica `at`: the public
    /// URL when there is one, else the replica's own address.
    pub fn proof_url(&self, at: usize, path: &str) -> String {
        let base = self.public.as_deref().unwrap_or_else(|| self.url(at));
        format!("{base}{path}")
    }

    /// The servers for a report: the addresses, comma-separated.
    pub fn describe(&self) -> String {
        self.urls.join(", ")
    }
}

/// An `http(s)://` base URL without a trailing slash.
fn base_url(text: &str) -> anyhow::Result<String> {
    let url = text.trim_end_matches('/');
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("{text:?} is not an http(s) server address ({e})"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
        "{text:?} is not an http(s) server address"
    );
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn devices_spread_over_the_replicas_and_move_on_in_turn() {
        let s = Servers::new(&urls(&["http://a:1/", "http://b:2", "http://c:3"]), None).unwrap();
        assert_eq!((s.home(0), s.home(1), s.home(2), s.home(3)), (0, 1, 2, 0));
        assert_eq!((s.next(0), s.next(2)), (1, 0));
        assert_eq!(s.url(0), "http://a:1");
        assert_eq!(s.proof_url(1, "/messages"), "http://b:2/messages");
        assert_eq!(s.describe(), "http://a:1, http://b:2, http://c:3");
    }

    #[test]
    fn proofs_name_the_public_url_when_there_is_one() {
        let s = Servers::new(&urls(&["http://a:1"]), Some("https://chat.example/")).unwrap();
        assert_eq!(s.proof_url(0, "/token"), "https://chat.example/token");
        assert_eq!(s.url(0), "http://a:1");
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in ["", "a:1", "ftp://a", "http://"] {
            assert!(Servers::new(&urls(&[bad]), None).is_err(), "{bad}");
        }
        assert!(Servers::new(&[], None).is_err());
        assert!(Servers::new(&urls(&["http://a"]), Some("nope")).is_err());
    }
}
