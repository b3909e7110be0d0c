//! Connecting a channel account to its platform, and telling the business
//! what to paste where.
//!
//! - [`register_telegram`] calls Telegram's `setWebhook` for an account,
//!   pointing it at `{server.public_url}/webhooks/telegram/{account}` with
//!   the account's secret token; Telegram's refusal comes back verbatim.
//! - [`setup`] is what the business must set elsewhere per platform: the
//!   Telegram webhook URL, Messenger's callback URL and verify token, the
//!   Mailgun route, the widget's embed snippet. Without `server.public_url`
//!   the URLs are paths, and a note says what to set.
//! - [`connected`] says whether an account is known to reach us.
//! - [`webchat_account`] is a bot's web chat account, made on first use
//!   (the widget's first socket, or the console's channel list).

use channels::ChannelKind;
use channels::telegram::{ALLOWED_UPDATES, BotApiError};
use serde_json::{Value, json};

use crate::config::PublicUrl;
use crate::context::App;
use crate::error::{ApiError, ErrorKind};
use store::models::bot::Bot;
use store::models::channel_account::{
    AccountActivity, AccountSpec, AccountStatus, ChannelAccount, Credentials,
};

/// The Messenger webhook fields a page must be subscribed to: the events
/// the adapter reads.
pub const MESSENGER_FIELDS: &[&str] = &[
    "messages",
    "messaging_postbacks",
    "message_deliveries",
    "message_reads",
    "messaging_handovers",
];

/// The WhatsApp webhook fields the app must subscribe to: messages and
/// their statuses come in `messages`.
pub const WHATSAPP_FIELDS: &[&str] = &["messages"];

/// The Instagram webhook fields the app must subscribe to.
pub const INSTAGRAM_FIELDS: &[&str] = &[
    "messages",
    "messaging_postbacks",
    "message_reactions",
    "messaging_seen",
];

/// Points the Telegram bot of `bot_token` at this gateway's route for
/// `public_id`, signed with `secret_token`. Needs `server.public_url`.
///
/// Errors quote Telegram's `description` verbatim: 422 when Telegram does
/// not know the token (the caller's input), 502 for any other refusal (a
/// URL that is not HTTPS: `Bad Request: bad webhook: An HTTPS URL must be
/// provided for webhook`) or when Telegram cannot be reached.
pub async fn register_telegram(
    app: &App,
    bot_token: &str,
    public_id: &str,
    secret_token: &str,
) -> Result<(), ApiError> {
    let Some(base) = &app.settings.server.public_url else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "server.public_url is not set: the server does not know the address Telegram should call",
        ));
    };
    let url = format!("{base}/webhooks/telegram/{public_id}");
    app.channels
        .telegram
        .set_webhook(bot_token, &url, secret_token)
        .await
        .map_err(|e| telegram_error("setWebhook", &url, &e))?;
    tracing::info!(account = %public_id, %url, "Telegram webhook set");
    Ok(())
}

fn telegram_error(method: &str, url: &str, e: &BotApiError) -> ApiError {
    let (kind, hint) = if e.is_bad_token() {
        (ErrorKind::Unprocessable, " (check `bot_token`)")
    } else {
        (ErrorKind::BadGateway, "")
    };
    ApiError::new(
        kind,
        format!("Telegram's {method} failed: {}{hint}", e.description),
    )
    .with_details(json!({
        "telegram": {
            "method": method,
            "error_code": e.error_code,
            "description": e.description,
        },
        "webhook_url": url,
    }))
}

/// What the business must set on the platform's side for `account`.
/// `credentials` are the account's opened credentials (Messenger's verify
/// token is shown: it is pasted into Meta's settings).
pub fn setup(
    public_url: Option<&PublicUrl>,
    account: &ChannelAccount,
    credentials: &Credentials,
) -> Value {
    let base = public_url.map_or("", PublicUrl::as_str);
    let id = &account.public_id;
    let mut setup = match account.kind {
        ChannelKind::Telegram => json!({
            "webhook_url": format!("{base}/webhooks/telegram/{id}"),
            "allowed_updates": ALLOWED_UPDATES,
        }),
        ChannelKind::Messenger => json!({
            "callback_url": format!("{base}/webhooks/messenger"),
            "verify_token": credentials.get("verify_token").map(|s| s.expose()),
            "subscribe_fields": MESSENGER_FIELDS,
        }),
        ChannelKind::Whatsapp => json!({
            "callback_url": format!("{base}/webhooks/whatsapp"),
            "verify_token": credentials.get("verify_token").map(|s| s.expose()),
            "subscribe_fields": WHATSAPP_FIELDS,
            "phone_number_id": account.external_id,
            "steps": [
                "In the Meta app's WhatsApp > Configuration, set the callback URL and verify token above",
                "Subscribe the webhook field `messages` (statuses come with it)",
                "Use a permanent System User access token with whatsapp_business_messaging",
                "Optional: an approved template as `reengage_template` lets agents reach a customer after the 24-hour window",
            ],
        }),
        ChannelKind::Instagram => json!({
            "callback_url": format!("{base}/webhooks/instagram"),
            "verify_token": credentials.get("verify_token").map(|s| s.expose()),
            "subscribe_fields": INSTAGRAM_FIELDS,
            "ig_account_id": account.external_id,
            "steps": [
                "In the Meta app's Instagram > Webhooks, set the callback URL and verify token above",
                "Subscribe the fields listed, and turn on 'Allow access to messages' in the Instagram app's settings",
                "The page access token needs instagram_manage_messages (and human_agent for replies after 24 hours)",
            ],
        }),
        ChannelKind::Email => {
            let forward = format!("{base}/webhooks/email/{id}/mime");
            let address = account.external_id.as_deref().unwrap_or_default();
            json!({
                "webhook_url": forward,
                "mailgun_route": {
                    "expression": format!("match_recipient(\"{address}\")"),
                    "actions": [format!("forward(\"{forward}\")"), "stop()"],
                },
            })
        }
        ChannelKind::Webchat => json!({
            "embed_snippet": format!(
                "<script src=\"{base}/widget.js\" data-bot=\"{}\" defer></script>",
                account.bot_id
            ),
        }),
    };
    if public_url.is_none() {
        let mut note = String::from(
            "server.public_url is not set, so these are paths on this gateway: set it to the \
             HTTPS address the platforms reach this gateway at (e.g. https://support.example.com)",
        );
        if account.kind == ChannelKind::Telegram {
            note.push_str(&format!(
                ", then register the webhook with POST /api/v1/bots/{}/channels/{}/webhook",
                account.bot_id, account.id
            ));
        }
        setup["note"] = json!(note);
    }
    setup
}

/// Whether the account is known to reach us: active, and for the web chat
/// always; for Telegram once the server set its webhook; for every
/// platform once a customer message came in through it.
pub fn connected(account: &ChannelAccount, activity: &AccountActivity) -> bool {
    account.status == AccountStatus::Active
        && (account.kind == ChannelKind::Webchat
            || account.webhook_set_at.is_some()
            || activity.last_inbound_at.is_some())
}

/// The bot's web chat account, created on first use.
pub async fn webchat_account(app: &App, bot: &Bot) -> Result<ChannelAccount, ApiError> {
    let public_id = format!("webchat-{}", bot.id);
    let mut conn = app.db.get().await?;
    if let Some(account) = ChannelAccount::find_by_public_id(&mut conn, &public_id).await? {
        // Only this bot's own web chat account: an id taken by anything
        // else must never route this bot's customers elsewhere.
        if account.bot_id == bot.id && account.kind == ChannelKind::Webchat {
            return Ok(account);
        }
        tracing::error!(bot = %bot.id, account = %account.id, "the web chat account id is taken by another account");
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "this bot's web chat is unavailable",
        ));
    }
    let spec = AccountSpec {
        public_id,
        bot_id: bot.id.clone(),
        kind: ChannelKind::Webchat,
        external_id: None,
        credentials: Credentials::default(),
    };
    let account = ChannelAccount::upsert(&mut conn, &app.master_key, &spec)
        .await
        .map(|u| u.row().clone())
        .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
    app.accounts.changed(&app.broker).await;
    Ok(account)
}
