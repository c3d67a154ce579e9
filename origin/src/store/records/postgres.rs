//! The records' statements on PostgreSQL (see the parent module's rules).

use std::time::Duration;

use tokio_postgres::{Client, NoTls, Row};

use super::entry::{fields_of, to_i64, to_u64, Erased, Erasure, StoredEntry, Visit, COLUMNS};
use crate::receipt::{derived_seq, NUMBERED_FROM};
use crate::store::postgres::{migrate, receipt_key, unavailable};
use crate::store::Unavailable;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows fetched per round trip when a whole campaign is listed.
const PAGE_ROWS: i32 = 500;

pub(super) async fn open(url: &str, region: &str) -> Result<Client, Unavailable> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Unavailable(format!("not a PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(format!("harbour-entries {region}"));
    }
    let (mut client, connection) = config.connect(NoTls).await.map_err(unavailable)?;
    // The connection's task ends when the client is dropped.
    tokio::spawn(connection);
    migrate(&mut client).await?;
    Ok(client)
}

fn entry(row: &Row) -> Result<StoredEntry, Unavailable> {
    let locale: Option<String> = row.get(6);
    let version: Option<String> = row.get(7);
    Ok(StoredEntry {
        receipt_id: row.get(0),
        region: row.get(1),
        campaign: row.get(2),
        stored_at_ms: to_u64(row.get(3)),
        platform_country: row.get(4),
        declared_country: row.get(5),
        notice: locale.zip(version),
        marketing_withdrawn_ms: row.get::<_, Option<i64>>(8).map(to_u64),
        person_digest: row.get(9),
        fields: fields_of(row.get(10))?,
    })
}

fn select(condition: &str) -> String {
    format!(
        "SELECT {COLUMNS}, payload::text FROM submissions WHERE {condition}
         ORDER BY stored_at_ms, receipt_id"
    )
}

pub(super) async fn foreign_region(
    client: &Client,
    campaign: &str,
    region: &str,
) -> Result<Option<String>, Unavailable> {
    let row = client
        .query_opt(
            "SELECT region FROM submissions WHERE campaign = $1 AND region <> $2 LIMIT 1",
            &[&campaign, &region],
        )
        .await
        .map_err(unavailable)?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn by_person(
    client: &Client,
    campaign: &str,
    person: &str,
) -> Result<Vec<StoredEntry>, Unavailable> {
    let sql = select("campaign = $1 AND person_digest = $2");
    let rows = client
        .query(&sql, &[&campaign, &person])
        .await
        .map_err(unavailable)?;
    rows.iter().map(entry).collect()
}

/// A derived id leads to its row's number; an id given before ids were derived is found through
/// the index that holds only those rows.
pub(super) async fn by_receipt(
    client: &Client,
    campaign: &str,
    receipt_id: &str,
) -> Result<Option<StoredEntry>, Unavailable> {
    if let Some(seq) = derived_seq(&receipt_key(client).await?, receipt_id) {
        let sql = select("seq = $3 AND campaign = $1 AND receipt_id = $2");
        let row = client
            .query_opt(&sql, &[&campaign, &receipt_id, &seq])
            .await
            .map_err(unavailable)?;
        if let Some(row) = row {
            return entry(&row).map(Some);
        }
    }
    let sql = select(&format!(
        "receipt_id = $2 AND seq < {NUMBERED_FROM} AND campaign = $1"
    ));
    let row = client
        .query_opt(&sql, &[&campaign, &receipt_id])
        .await
        .map_err(unavailable)?;
    row.as_ref().map(entry).transpose()
}

pub(super) async fn erase(
    client: &mut Client,
    region: &str,
    campaign: &str,
    person: &str,
    now_ms: u64,
) -> Result<Erased, Unavailable> {
    let tx = client.transaction().await.map_err(unavailable)?;
    let deleted = tx
        .execute(
            "DELETE FROM submissions WHERE campaign = $1 AND person_digest = $2",
            &[&campaign, &person],
        )
        .await
        .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO erasures (at_ms, region, campaign, entries) VALUES ($1, $2, $3, $4)",
        &[&to_i64(now_ms), &region, &campaign, &to_i64(deleted)],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(Erased {
        entries: deleted,
        log_truncated: None,
    })
}

pub(super) async fn withdraw(
    client: &Client,
    campaign: &str,
    person: &str,
    field: &str,
    now_ms: u64,
) -> Result<u64, Unavailable> {
    // One statement: the fields and the time change together. The first withdrawal's time stays.
    client
        .execute(
            "UPDATE submissions
                SET payload = jsonb_set(payload, ARRAY['fields', $3::text], 'false'::jsonb),
                    marketing_withdrawn_ms = COALESCE(marketing_withdrawn_ms, $4)
                WHERE campaign = $1 AND person_digest = $2",
            &[&campaign, &person, &field, &to_i64(now_ms)],
        )
        .await
        .map_err(unavailable)
}

pub(super) async fn each(
    client: &mut Client,
    campaign: &str,
    visit: &mut Visit<'_>,
) -> Result<u64, Unavailable> {
    // A portal in a read-only transaction: the campaign's rows come a page at a time, from one
    // snapshot, however many there are.
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(unavailable)?;
    let statement = tx
        .prepare(&select("campaign = $1"))
        .await
        .map_err(unavailable)?;
    let portal = tx
        .bind(&statement, &[&campaign])
        .await
        .map_err(unavailable)?;
    let mut count = 0;
    loop {
        let rows = tx
            .query_portal(&portal, PAGE_ROWS)
            .await
            .map_err(unavailable)?;
        for row in &rows {
            visit(entry(row)?)?;
            count += 1;
        }
        if rows.len() < usize::try_from(PAGE_ROWS).unwrap_or(0) {
            break;
        }
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(count)
}

pub(super) async fn erasures(client: &Client, campaign: &str) -> Result<Vec<Erasure>, Unavailable> {
    let rows = client
        .query(
            "SELECT at_ms, region, campaign, entries FROM erasures WHERE campaign = $1
             ORDER BY seq",
            &[&campaign],
        )
        .await
        .map_err(unavailable)?;
    Ok(rows
        .iter()
        .map(|r| Erasure {
            at_ms: to_u64(r.get(0)),
            region: r.get(1),
            campaign: r.get(2),
            entries: to_u64(r.get(3)),
        })
        .collect())
}
