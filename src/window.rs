//! The messaging window of a conversation on Meta's platforms (the rules
//! are [`channels::meta::Window`]'s): what a reply may do now, for the
//! deliverer (the bot never writes outside the window; a person's reply
//! goes under the `HUMAN_AGENT` tag or as the re-engagement template), for
//! the reply route (a reply that cannot go out is refused with 409 before
//! it is stored), and for the console (the window's state).

use channels::meta::{Author, Closed, Window};
use channels::{ChannelKind, Reach, Secrets};
use chrono::Utc;
use serde_json::{Value, json};

use store::models::message::{AuthorKind, Message};

/// The re-engagement template of a WhatsApp account: name and language
/// (`en_US` when not given), from its `reengage_template` settings.
pub fn template(secrets: &dyn Secrets) -> Option<(&str, &str)> {
    let name = secrets.get("reengage_template").filter(|n| !n.is_empty())?;
    let language = secrets
        .get("reengage_language")
        .filter(|l| !l.is_empty())
        .unwrap_or("en_US");
    Some((name, language))
}

/// The window of a conversation on `kind` whose newest customer message is
/// `last`; `None` for platforms without one.
pub fn of(kind: ChannelKind, last: Option<&Message>) -> Option<Window> {
    Window::of(kind, last.map(|m| m.created_at.and_utc()))
}

/// How `message` may go out now on `kind`.
pub fn reach_now(
    kind: ChannelKind,
    last: Option<&Message>,
    message: &Message,
    secrets: &dyn Secrets,
) -> Result<Reach, Closed> {
    let author = match message.author_kind {
        AuthorKind::Agent => Author::Person,
        _ => Author::Bot,
    };
    reach(kind, last, author, secrets)
}

/// How a reply by `author` may go out now on `kind`.
pub fn reach(
    kind: ChannelKind,
    last: Option<&Message>,
    author: Author,
    secrets: &dyn Secrets,
) -> Result<Reach, Closed> {
    match of(kind, last) {
        Some(window) => window.reach(Utc::now(), author, template(secrets)),
        None => Ok(Reach::Standard),
    }
}

/// The window as the console shows it: open or not, until when, and what
/// a person's reply would do now (`standard`, `human_agent`, `template`,
/// or `closed` with the reason).
pub fn json(window: &Window, secrets: &dyn Secrets) -> Value {
    let now = Utc::now();
    let (agent_reply, reason) = match window.reach(now, Author::Person, template(secrets)) {
        Ok(Reach::Standard) => ("standard", None),
        Ok(Reach::HumanAgent) => ("human_agent", None),
        Ok(Reach::Template { .. }) => ("template", None),
        Err(closed) => ("closed", Some(closed.reason)),
    };
    json!({
        "open": window.is_open(now),
        "last_customer_message": window.last_customer_message,
        "closes_at": window.closes_at,
        "human_agent_until": window.human_agent_until,
        "agent_reply": agent_reply,
        "reason": reason,
    })
}
