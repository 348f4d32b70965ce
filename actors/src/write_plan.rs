//! Writes described as data: statements and their values, applied together
//! in one transaction.
//!
//! A plan is built once and applied by whichever store the gateway runs on:
//! on SQLite by the file's writer thread ([`crate::sqlite_writer`]), which
//! commits the plans of many callers with one fsync; on PostgreSQL by a
//! pooled sqlx connection. The SQL must suit the store (`?` parameters on
//! SQLite bind in order at O(1); PostgreSQL needs `$N`).

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use crate::sqlite_writer::SqliteWriter;

/// One bound value, NULL or not. A NULL keeps its type: PostgreSQL types a
/// parameter by what is bound, and a NULL bound as text is refused for a
/// number column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    /// An integer 0/1 on SQLite, a boolean on PostgreSQL.
    Bool(Option<bool>),
    Blob(Option<Vec<u8>>),
}

/// `From` for a type and its `Option`, as the `variant` of [`Value`].
macro_rules! value_from {
    ($variant:ident: $($t:ty => $convert:expr),+ $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(Some($convert(v)))
            }
        }
        impl From<Option<$t>> for Value {
            fn from(v: Option<$t>) -> Self {
                Value::$variant(v.map($convert))
            }
        }
    )+};
}

value_from!(Text: String => |v| v, &str => str::to_owned, &String => String::clone);
value_from!(Int: i64 => |v| v);
value_from!(Real: f64 => |v| v);
value_from!(Bool: bool => |v| v);
value_from!(Blob: Vec<u8> => |v| v);

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        Value::Text(v.clone())
    }
}

impl From<&Option<i64>> for Value {
    fn from(v: &Option<i64>) -> Self {
        Value::Int(*v)
    }
}

/// One statement of a plan: its SQL (constant text and placeholders only,
/// nothing from callers spliced in) and its values in order.
#[derive(Debug, Clone)]
pub struct Statement {
    pub(crate) sql: String,
    pub(crate) values: Vec<Value>,
    /// Collect the first column of every row it returns (`RETURNING`).
    pub(crate) returns_rows: bool,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            values: Vec::new(),
            returns_rows: false,
        }
    }

    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Keep the first column (text) of the rows it returns.
    pub fn returning(mut self) -> Self {
        self.returns_rows = true;
        self
    }
}

/// Statements applied all or nothing.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub(crate) statements: Vec<Statement>,
}

impl Plan {
    pub fn new() -> Self {
        Plan::default()
    }

    pub fn push(&mut self, statement: Statement) {
        self.statements.push(statement);
    }

    pub fn then(mut self, statement: Statement) -> Self {
        self.push(statement);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// Per statement, the first column of each row it returned (empty for a
/// statement not marked [`Statement::returning`]).
pub type Applied = Vec<Vec<String>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    /// The store refused or failed; nothing of the plan was committed.
    #[error("{0}")]
    Store(String),
}

impl From<sqlx::Error> for PlanError {
    fn from(e: sqlx::Error) -> Self {
        PlanError::Store(e.to_string())
    }
}

/// For callers that speak sqlx's error: a plan's failure is the store's.
impl From<PlanError> for sqlx::Error {
    fn from(e: PlanError) -> Self {
        sqlx::Error::AnyDriverError(Box::new(e))
    }
}

/// Apply `plan` to `pool`'s database: through the SQLite file's writer
/// thread, or on a pooled connection (PostgreSQL).
pub async fn apply(pool: &AnyPool, plan: Plan) -> Result<Applied, PlanError> {
    match SqliteWriter::of(pool).await? {
        Some(writer) => writer.apply(plan).await,
        None => apply_on(&mut *pool.acquire().await?, plan).await,
    }
}

/// Apply `plan` on `conn`, in a transaction when it has more than one
/// statement (a sqlx transaction dropped uncommitted rolls back).
pub async fn apply_on(conn: &mut AnyConnection, plan: Plan) -> Result<Applied, PlanError> {
    if plan.statements.len() > 1 {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let applied = run_all(&mut tx, &plan).await?;
        tx.commit().await?;
        Ok(applied)
    } else {
        Ok(run_all(conn, &plan).await?)
    }
}

async fn run_all(conn: &mut AnyConnection, plan: &Plan) -> Result<Applied, sqlx::Error> {
    let mut applied = Vec::with_capacity(plan.statements.len());
    for statement in &plan.statements {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement.sql.as_str()));
        for value in &statement.values {
            query = bind(query, value);
        }
        if statement.returns_rows {
            let rows = query.fetch_all(&mut *conn).await?;
            applied.push(
                rows.iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect::<Result<_, _>>()?,
            );
        } else {
            query.execute(&mut *conn).await?;
            applied.push(Vec::new());
        }
    }
    Ok(applied)
}

fn bind<'q>(query: Query<'q, Any, AnyArguments>, value: &'q Value) -> Query<'q, Any, AnyArguments> {
    match value {
        Value::Text(v) => query.bind(v.as_deref()),
        Value::Int(v) => query.bind(*v),
        Value::Real(v) => query.bind(*v),
        Value::Bool(v) => query.bind(*v),
        Value::Blob(v) => query.bind(v.as_deref()),
    }
}
