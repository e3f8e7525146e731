//! Whether a client still takes the answer it is sent, told from the
//! server's side of a response body: the server asks the body for a piece,
//! the body hands one out, and the server asks for the next only once the
//! client has room for it. A piece handed out and not followed by another
//! ask for the limit means the client has taken nothing for that long (an
//! HTTP/2 client holding its stream back by flow control, say): the adapter
//! then drops the answer, which cancels the origin's request and gives back
//! whatever it held.
//!
//! Time is passed in as microseconds from any fixed start, so the rule is
//! tested with virtual time.

/// A response body's last hand-out and whether it has been asked for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handout {
    limit_us: u64,
    /// When the piece the server still holds was handed out; `None` while
    /// the server is asking (waiting for the origin is not the client's).
    held_since_us: Option<u64>,
}

impl Handout {
    /// A body not yet asked for anything, cut after `limit_us` of a piece
    /// held without another ask.
    #[must_use]
    pub const fn new(limit_us: u64) -> Self {
        Self {
            limit_us,
            held_since_us: None,
        }
    }

    /// The server asked for the next piece: whatever it held went out.
    pub fn asked(&mut self) {
        self.held_since_us = None;
    }

    /// A piece was handed out at `now_us`; until the next ask, it is the
    /// client that holds the answer up.
    pub fn handed_out(&mut self, now_us: u64) {
        self.held_since_us = Some(now_us);
    }

    /// When the answer counts as stalled if nothing is asked for before;
    /// `None` while the body is being asked for its next piece.
    #[must_use]
    pub fn deadline_us(&self) -> Option<u64> {
        self.held_since_us
            .map(|since| since.saturating_add(self.limit_us))
    }

    /// Whether the client has taken nothing for the limit, at `now_us`.
    #[must_use]
    pub fn stalled(&self, now_us: u64) -> bool {
        self.deadline_us()
            .is_some_and(|deadline| now_us >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::Handout;

    const S: u64 = 1_000_000;

    #[test]
    fn a_piece_held_for_the_limit_is_a_stall() {
        let mut body = Handout::new(300 * S);
        assert_eq!(body.deadline_us(), None, "nothing handed out yet");
        body.asked();
        body.handed_out(10 * S);
        assert_eq!(body.deadline_us(), Some(310 * S));
        assert!(!body.stalled(310 * S - 1));
        assert!(body.stalled(310 * S));
    }

    #[test]
    fn each_ask_starts_the_count_again() {
        let mut body = Handout::new(300 * S);
        // A slow but steady client: each piece taken within the limit.
        for piece in 0..10 {
            let at = piece * 299 * S;
            body.handed_out(at);
            assert!(!body.stalled(at + 299 * S));
            body.asked();
        }
        assert!(
            !body.stalled(u64::MAX),
            "waiting for the origin is never a stall"
        );
    }

    #[test]
    fn waiting_for_the_origin_is_not_counted() {
        let mut body = Handout::new(5 * S);
        body.handed_out(0);
        body.asked();
        // The origin takes a minute for the next piece.
        assert!(!body.stalled(60 * S));
        body.handed_out(60 * S);
        assert!(!body.stalled(64 * S));
        assert!(body.stalled(65 * S));
    }

    #[test]
    fn the_deadline_does_not_overflow() {
        let mut body = Handout::new(u64::MAX);
        body.handed_out(u64::MAX - 1);
        assert_eq!(body.deadline_us(), Some(u64::MAX));
    }
}
