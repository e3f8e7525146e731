//! The Ollama origin: where forwarded requests go.

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;

/// A parsed origin URL: scheme, authority and an optional base path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// Base path without a trailing slash; empty for none.
    base_path: String,
    host_header: HeaderValue,
}

/// Why an origin URL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OriginProblem {
    NotAbsoluteHttp,
    HasUserInfo,
    HasQuery,
}

impl Origin {
    /// Parses an absolute `http` or `https` URL, optionally with a base path.
    pub(crate) fn parse(raw: &str) -> Result<Self, OriginProblem> {
        let uri: Uri = raw
            .trim()
            .parse()
            .map_err(|_| OriginProblem::NotAbsoluteHttp)?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or(OriginProblem::NotAbsoluteHttp)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(OriginProblem::NotAbsoluteHttp);
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or(OriginProblem::NotAbsoluteHttp)?;
        if authority.host().is_empty() {
            return Err(OriginProblem::NotAbsoluteHttp);
        }
        if authority.as_str().contains('@') {
            return Err(OriginProblem::HasUserInfo);
        }
        if uri.query().is_some() {
            return Err(OriginProblem::HasQuery);
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| OriginProblem::NotAbsoluteHttp)?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            host_header,
        })
    }

    /// The scheme, `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Host and optional port.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The base path, without a trailing slash; empty when there is none.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The value of the `Host` header for requests to this origin.
    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The upstream URI for a request target: base path, then the path
    /// (`resolved` when resolving its dot segments changed it, see
    /// [`crate::path`]) and the query exactly as received.
    pub(crate) fn join(&self, target: &PathAndQuery, resolved: Option<&str>) -> Uri {
        let pq = if self.base_path.is_empty() && resolved.is_none() {
            target.clone()
        } else {
            let path = resolved.unwrap_or(target.path());
            let mut joined = String::with_capacity(self.base_path.len() + target.as_str().len());
            joined.push_str(&self.base_path);
            joined.push_str(path);
            if let Some(query) = target.query() {
                joined.push('?');
                joined.push_str(query);
            }
            // Every part is made of valid path characters, so the join is too.
            PathAndQuery::try_from(joined).expect("base path + valid path is valid")
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .expect("scheme, authority and path are each valid")
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_based_origins() {
        let o = Origin::parse("http://127.0.0.1:11434").unwrap();
        assert_eq!(o.to_string(), "http://127.0.0.1:11434");
        let pq = PathAndQuery::from_static("/api/tags?x=1");
        assert_eq!(
            o.join(&pq, None).to_string(),
            "http://127.0.0.1:11434/api/tags?x=1"
        );
        assert_eq!(
            o.join(&pq, Some("/api/ps")).to_string(),
            "http://127.0.0.1:11434/api/ps?x=1"
        );

        let o = Origin::parse("https://ollama.example.com/base/").unwrap();
        assert_eq!(o.base_path(), "/base");
        assert_eq!(
            o.join(&pq, None).to_string(),
            "https://ollama.example.com/base/api/tags?x=1"
        );
        assert_eq!(o.host_header(), "ollama.example.com");
    }

    #[test]
    fn refuses_what_is_not_an_absolute_http_url() {
        for bad in [
            "",
            "ollama:11434",
            "/api",
            "ftp://x",
            "http://",
            "https://u:p@host",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(Origin::parse("http://h/?q=1"), Err(OriginProblem::HasQuery));
    }
}
