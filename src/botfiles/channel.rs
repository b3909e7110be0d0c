//! A bot file's `[[channels]]` table (the API's channel requests read the
//! same): the keys of each platform, checked, and the account they declare,
//! its secrets resolved and sealed later.

use std::collections::BTreeMap;
use std::path::Path;

use channels::ChannelKind;
use serde::Deserialize;
use store::crypto::Secret;
use store::models::channel_account::Credentials;

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum ChannelFile {
    Telegram {
        id: String,
        bot_token: String,
        secret_token: String,
    },
    Messenger {
        id: String,
        page_id: String,
        app_secret: String,
        page_access_token: String,
        verify_token: String,
    },
    Email {
        id: String,
        address: String,
        signing_key: String,
    },
    Whatsapp {
        id: String,
        phone_number_id: String,
        app_secret: String,
        access_token: String,
        verify_token: String,
        /// An approved template sent when a person replies after the
        /// 24-hour window.
        #[serde(default)]
        reengage_template: Option<String>,
        #[serde(default)]
        reengage_language: Option<String>,
    },
    Instagram {
        id: String,
        ig_account_id: String,
        app_secret: String,
        page_access_token: String,
        verify_token: String,
    },
}

#[derive(Debug)]
pub(crate) struct LoadedChannel {
    pub(crate) public_id: String,
    pub(crate) kind: ChannelKind,
    pub(crate) external_id: Option<String>,
    pub(crate) credentials: Credentials,
}

/// Resolves a secret's raw value (key, value); errors are (key, message).
pub(crate) type SecretResolver<'a> = dyn Fn(&str, String) -> Result<Secret, (String, String)> + 'a;

/// The channel account a `[[channels]]` table (or an API request) declares,
/// its secrets resolved by `secret`. Errors name the key and what is wrong,
/// never a value.
pub(crate) fn channel_spec(
    channel: ChannelFile,
    secret: &SecretResolver<'_>,
    path: Option<&Path>,
) -> Result<LoadedChannel, (String, String)> {
    let loaded = match channel {
        ChannelFile::Telegram {
            id,
            bot_token,
            secret_token,
        } => {
            let bot_token = secret("bot_token", bot_token)?;
            let secret_token = secret("secret_token", secret_token)?;
            // Telegram accepts 1-256 characters of A-Z a-z 0-9 _ - as the webhook secret.
            let st = secret_token.expose();
            if st.is_empty()
                || st.len() > 256
                || !st
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    "secret_token".into(),
                    "Telegram requires 1-256 characters of A-Z, a-z, 0-9, `_` and `-`".into(),
                ));
            }
            // The bot's numeric id is the part of the token before `:`;
            // it identifies the bot across channel ids.
            let bot_id = bot_token
                .expose()
                .split_once(':')
                .map(|(id, _)| id)
                .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned);
            if bot_id.is_none() {
                tracing::warn!(
                    file = %path.map(|p| p.display().to_string()).unwrap_or_default(),
                    channel = %id,
                    "bot_token is not of the form <bot id>:<secret>; Telegram will refuse it"
                );
            }
            LoadedChannel {
                public_id: id,
                kind: ChannelKind::Telegram,
                external_id: bot_id,
                credentials: BTreeMap::from([
                    ("bot_token".into(), bot_token),
                    ("secret_token".into(), secret_token),
                ]),
            }
        }
        ChannelFile::Messenger {
            id,
            page_id,
            app_secret,
            page_access_token,
            verify_token,
        } => {
            if page_id.trim().is_empty() || page_id.len() > 64 {
                return Err(("page_id".into(), "must be the page's id".into()));
            }
            LoadedChannel {
                public_id: id,
                kind: ChannelKind::Messenger,
                external_id: Some(page_id),
                credentials: BTreeMap::from([
                    ("app_secret".into(), secret("app_secret", app_secret)?),
                    (
                        "page_access_token".into(),
                        secret("page_access_token", page_access_token)?,
                    ),
                    ("verify_token".into(), secret("verify_token", verify_token)?),
                ]),
            }
        }
        ChannelFile::Whatsapp {
            id,
            phone_number_id,
            app_secret,
            access_token,
            verify_token,
            reengage_template,
            reengage_language,
        } => {
            let phone_number_id = platform_id("phone_number_id", &phone_number_id)?;
            let mut credentials = BTreeMap::from([
                ("app_secret".into(), secret("app_secret", app_secret)?),
                ("access_token".into(), secret("access_token", access_token)?),
                ("verify_token".into(), secret("verify_token", verify_token)?),
            ]);
            if let Some(name) = reengage_template.filter(|n| !n.trim().is_empty()) {
                credentials.insert("reengage_template".into(), Secret::new(name.trim()));
                let language = reengage_language.unwrap_or_else(|| "en_US".into());
                credentials.insert("reengage_language".into(), Secret::new(language.trim()));
            } else if reengage_language.is_some() {
                return Err((
                    "reengage_language".into(),
                    "is set without `reengage_template`".into(),
                ));
            }
            LoadedChannel {
                public_id: id,
                kind: ChannelKind::Whatsapp,
                external_id: Some(phone_number_id),
                credentials,
            }
        }
        ChannelFile::Instagram {
            id,
            ig_account_id,
            app_secret,
            page_access_token,
            verify_token,
        } => LoadedChannel {
            public_id: id,
            kind: ChannelKind::Instagram,
            external_id: Some(platform_id("ig_account_id", &ig_account_id)?),
            credentials: BTreeMap::from([
                ("app_secret".into(), secret("app_secret", app_secret)?),
                (
                    "page_access_token".into(),
                    secret("page_access_token", page_access_token)?,
                ),
                ("verify_token".into(), secret("verify_token", verify_token)?),
            ]),
        },
        ChannelFile::Email {
            id,
            address,
            signing_key,
        } => {
            let address = address.trim().to_lowercase();
            let valid = address
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
            if !valid {
                return Err(("address".into(), "is not an email address".into()));
            }
            LoadedChannel {
                public_id: id,
                kind: ChannelKind::Email,
                external_id: Some(address),
                credentials: BTreeMap::from([(
                    "signing_key".into(),
                    secret("signing_key", signing_key)?,
                )]),
            }
        }
    };
    check_channel_id(&loaded.public_id).map_err(|m| ("id".to_owned(), m))?;
    Ok(loaded)
}

/// A Meta platform id (a WhatsApp phone number id, an Instagram account
/// id): digits, as Meta issues them.
fn platform_id(key: &str, value: &str) -> Result<String, (String, String)> {
    let value = value.trim().to_owned();
    if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err((
            key.into(),
            "must be the numeric id Meta shows for it".into(),
        ));
    }
    Ok(value)
}

pub(crate) fn check_channel_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err("must be 1-64 characters of A-Z, a-z, 0-9, `-`, `_` and `.` (it appears in webhook URLs)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_table: &str) -> Result<LoadedChannel, (String, String)> {
        let channel: ChannelFile = toml::from_str(toml_table).expect("a channel table");
        channel_spec(channel, &|_, raw| Ok(Secret::new(raw)), None)
    }

    #[test]
    fn whatsapp_and_instagram_keys_are_checked() {
        let wa = "kind = \"whatsapp\"\nid = \"w\"\nphone_number_id = \" 106540352242922 \"\n\
                  app_secret = \"s\"\naccess_token = \"t\"\nverify_token = \"v\"\n";
        let loaded = spec(wa).expect("valid");
        assert_eq!(loaded.external_id.as_deref(), Some("106540352242922"));
        assert!(!loaded.credentials.contains_key("reengage_template"));
        let with_template =
            spec(&format!("{wa}reengage_template = \"we_are_back\"\n")).expect("valid");
        assert_eq!(
            with_template
                .credentials
                .get("reengage_language")
                .map(Secret::expose),
            Some("en_US")
        );
        let (key, _) = spec(&format!("{wa}reengage_language = \"sv\"\n")).expect_err("no template");
        assert_eq!(key, "reengage_language");
        let (key, message) =
            spec(&wa.replace("106540352242922", "+46 70 123")).expect_err("not Meta's id");
        assert_eq!(
            (key.as_str(), message.contains("numeric")),
            ("phone_number_id", true)
        );
        let ig = "kind = \"instagram\"\nid = \"i\"\nig_account_id = \"17841400000000001\"\n\
                  app_secret = \"s\"\npage_access_token = \"t\"\nverify_token = \"v\"\n";
        assert_eq!(spec(ig).expect("valid").kind, ChannelKind::Instagram);
        let (key, _) = spec(&ig.replace("17841400000000001", "")).expect_err("empty");
        assert_eq!(key, "ig_account_id");
    }
}
