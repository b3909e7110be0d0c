//! `frontdesk user create` and `frontdesk token create`: the first owner of
//! a fresh install, and API tokens, from the terminal.
//!
//! The password is read from the terminal without echo (asked twice), or
//! from standard input when it is not a terminal (one line), or from the
//! environment variable named by `--password-env`. Never from an argument:
//! arguments show in `ps` and shell history.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

use crate::context::App;
use store::models::audit::{ActorKind, Audit};
use store::models::session::ApiToken;
use store::models::user::{Role, User};
use store::models::workspace::Workspace;

/// `frontdesk user …`
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user (or give an existing one a role) in a workspace,
    /// created if missing.
    Create {
        /// Workspace slug.
        #[arg(long)]
        workspace: String,
        /// Login email.
        #[arg(long)]
        email: String,
        /// owner, admin or agent.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Shown to colleagues (default: the part of the email before @).
        #[arg(long)]
        name: Option<String>,
        /// Read the password from this environment variable instead of
        /// asking.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
}

/// `frontdesk token …`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed once and stored hashed.
    Create {
        /// Workspace slug.
        #[arg(long)]
        workspace: String,
        /// What it is for.
        #[arg(long)]
        name: String,
        /// owner, admin or agent.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a role: owner, admin or agent"))
}

fn read_password(env: &[(String, String)], var: Option<&str>) -> anyhow::Result<String> {
    if let Some(var) = var {
        return env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("--password-env {var}: the variable is not set"));
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("again: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ; nothing was created");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn workspace(app: &App, slug: &str) -> anyhow::Result<Workspace> {
    let valid = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!("--workspace `{slug}`: use 1-64 characters of a-z, 0-9 and `-`");
    }
    let mut conn = app.db.get().await?;
    Ok(Workspace::ensure(&mut conn, slug).await?)
}

/// Runs `frontdesk user …`.
#[allow(clippy::print_stdout)] // the command's result, for the operator
pub async fn run_user(
    app: &App,
    env: &[(String, String)],
    command: UserCommand,
) -> anyhow::Result<()> {
    let UserCommand::Create {
        workspace: slug,
        email,
        role,
        name,
        password_env,
    } = command;
    let email = email.trim().to_lowercase();
    if !email
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
    {
        bail!("--email `{email}` is not an email address");
    }
    let workspace = workspace(app, &slug).await?;
    let mut conn = app.db.get().await?;
    let existing = User::find_by_email(&mut conn, &email).await?;
    let (user, created) = match existing {
        Some(user) => (user, false),
        None => {
            let password = read_password(env, password_env.as_deref())?;
            if let Some(problem) = crate::auth::password_problem(&password) {
                bail!("{problem}; nothing was created");
            }
            let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
                .await?
                .map_err(anyhow::Error::msg)?;
            let name = name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| email.split('@').next().unwrap_or("").to_owned());
            (
                User::create(&mut conn, &email, &name, Some(&hash)).await?,
                true,
            )
        }
    };
    User::set_role(&mut conn, &user.id, &workspace.id, role).await?;
    Audit {
        workspace_id: Some(&workspace.id),
        actor_kind: Some(ActorKind::System),
        actor_id: Some("cli"),
        action: "user.add",
        target_kind: "user",
        target_id: Some(&user.id),
        after: Some(serde_json::json!({ "email": user.email, "role": role })),
        ..Audit::default()
    }
    .record(&mut conn)
    .await?;
    if created {
        println!("created {} as {role} of {}", user.email, workspace.slug);
    } else {
        println!(
            "{} exists already; now {role} of {} (password unchanged)",
            user.email, workspace.slug
        );
    }
    Ok(())
}

/// Runs `frontdesk token …`.
#[allow(clippy::print_stdout)] // the token, shown once
pub async fn run_token(app: &App, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create {
        workspace: slug,
        name,
        role,
    } = command;
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let workspace = workspace(app, &slug).await?;
    let secret = crate::auth::new_token(crate::auth::API_TOKEN_PREFIX);
    let mut conn = app.db.get().await?;
    let token = ApiToken::create(
        &mut conn,
        &workspace.id,
        name.trim(),
        role,
        &crate::auth::token_hash(&secret),
        None,
        None,
    )
    .await?;
    Audit {
        workspace_id: Some(&workspace.id),
        actor_kind: Some(ActorKind::System),
        actor_id: Some("cli"),
        action: "token.create",
        target_kind: "api_token",
        target_id: Some(&token.id),
        after: serde_json::to_value(&token).ok(),
        ..Audit::default()
    }
    .record(&mut conn)
    .await?;
    println!("{secret}");
    eprintln!(
        "API token `{}` ({role} of {}); shown once, store it now",
        token.name, workspace.slug
    );
    Ok(())
}
