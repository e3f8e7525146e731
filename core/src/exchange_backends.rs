//! The exchange's part in several Ollama boxes: where a request goes among
//! them, and a listing asked of every box merged into one answer.

use bytes::Bytes;
use http::{response, Response};

use super::{Exchange, Routing};
use crate::backends::{Backends, Need, Probe, Route};
use crate::error::ProxyError;
use crate::listing;

impl Exchange {
    /// Where the request goes among the Ollama boxes, from what `backends`
    /// knows at `now_us` and, for a body that names its model, the model
    /// its gate read (`named`: [`ModelGate::model`] once the gate let the
    /// body through). With one box, always that one.
    ///
    /// # Errors
    /// No box has the model: the 404 `model_not_found` answer (recorded as
    /// this exchange's rejection).
    pub fn choose_backends(
        &mut self,
        backends: &Backends,
        named: Option<&str>,
        now_us: u64,
    ) -> Result<Route, Box<Response<Bytes>>> {
        let need = match &self.routing {
            _ if !self.several => Need::Any,
            Routing::Body { manage: false, .. } => named.map_or(Need::Any, Need::Model),
            Routing::Body { manage: true, .. } => Need::Manage(named),
            Routing::Path(model) => Need::Model(model),
            Routing::Manage => Need::Manage(None),
            Routing::Listing { .. } | Routing::Any => Need::Any,
        };
        let routed = backends.route_for(need, now_us);
        let body = match (&routed, need) {
            (Err(_), Need::Model(model)) => Some(ProxyError::ModelNotFound.body_for_model(model)),
            _ => None,
        };
        routed.map_err(|_| {
            let error = ProxyError::ModelNotFound;
            self.rejection = Some(error);
            Box::new(self.local_json(error.status(), body.unwrap_or_else(|| error.body())))
        })
    }

    /// Whether the request goes to every box (a listing, with several):
    /// their answers are merged by [`Exchange::merge_listings`].
    pub fn fans_out(&self) -> bool {
        self.several && matches!(self.routing, Routing::Listing { .. })
    }

    /// What a successful answer to this request tells of the box's models
    /// (`/api/tags`: its models, `/api/ps`: those loaded), for
    /// [`Backends::learnt`].
    pub fn probe(&self) -> Option<Probe> {
        match self.routing {
            Routing::Listing { probe, .. } => probe,
            _ => None,
        }
    }

    /// The client's answer to a listing asked of every box, from each
    /// box's answer (head and whole body, or why there is none), in box
    /// order: the successful ones merged ([`Exchange::merge_listings`])
    /// under the first one's head; none successful, the first answer a box
    /// gave, as it is; none at all, the first error. Returns the answer
    /// and the proxy's error, if it made one.
    pub fn fan_in(
        &self,
        answers: Vec<Result<(response::Parts, Bytes), ProxyError>>,
    ) -> (Response<Bytes>, Option<ProxyError>) {
        let mut head = None;
        let mut bodies = Vec::new();
        let mut first_other = None;
        for answer in answers {
            match answer {
                Ok((h, body)) if h.status.is_success() => {
                    head.get_or_insert(h);
                    bodies.push(body);
                }
                // A box's own answer says more than the proxy's error.
                Ok(answer) if !matches!(first_other, Some(Ok(_))) => first_other = Some(Ok(answer)),
                Err(error) if first_other.is_none() => first_other = Some(Err(error)),
                _ => {}
            }
        }
        let (mut head, body) = match (head, first_other) {
            (Some(head), _) => match self.merge_listings(&bodies) {
                Ok(listing) => (head, listing),
                Err(error) => return (self.error_response(error), Some(error)),
            },
            (None, Some(Ok((head, body)))) => (head, body),
            (None, Some(Err(error))) => return (self.error_response(error), Some(error)),
            (None, None) => {
                let error = ProxyError::OriginUnreachable;
                return (self.error_response(error), Some(error));
            }
        };
        self.rewrite_response(&mut head);
        (Response::from_parts(head, body), None)
    }

    /// The listings of several boxes (each a successful answer, read whole)
    /// as one, without repeats, then filtered to the key's models as
    /// [`Exchange::filter_listing`] does.
    ///
    /// # Errors
    /// [`ProxyError::OriginListingUnreadable`] when one is not a listing.
    pub fn merge_listings(&self, bodies: &[Bytes]) -> Result<Bytes, ProxyError> {
        let Routing::Listing { kind, .. } = self.routing else {
            return Err(ProxyError::OriginListingUnreadable);
        };
        let slices: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        if slices.iter().any(|b| b.is_empty()) {
            // HEAD: nothing listed.
            return Ok(Bytes::new());
        }
        let merged =
            listing::merge(kind, &slices).map_err(|_| ProxyError::OriginListingUnreadable)?;
        self.filter_read(&merged)
    }
}
