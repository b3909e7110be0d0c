//! The data model: one file per model, holding its struct and its queries.
//!
//! Every query is written once through [`db_run!`](crate::db_run) and runs on
//! PostgreSQL and SQLite alike. States are enums, stored as text; ids are
//! text UUIDs (v7).

pub mod analytics;
pub mod audit;
pub mod bot;
pub mod channel_account;
pub mod conversation;
pub mod customer;
pub mod event;
pub mod gap;
pub mod handoff;
pub mod inbound;
pub mod instance_meta;
pub mod knowledge;
pub mod message;
pub mod note;
pub mod session;
pub mod usage;
pub mod user;
pub mod workspace;

/// Implements `as_str`, `Display`, `FromStr` and text storage for a
/// fieldless enum whose variants map to fixed strings.
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[derive(diesel::AsExpression, diesel::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = String::from_sql(bytes)?;
                Ok(text.parse::<$name>()?)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::models::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::models::UnknownVariant {
                        kind: stringify!($name),
                        value: other.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}
pub(crate) use text_enum;

/// A stored or supplied string that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} (expected one of: {})", expected.join(", "))]
pub struct UnknownVariant {
    /// The enum.
    pub kind: &'static str,
    /// What was found.
    pub value: String,
    /// The valid names.
    pub expected: &'static [&'static str],
}
