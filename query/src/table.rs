//! The readings files as DataFusion tables.
//!
//! Files of stored layout 4 mean what their columns say: [`layout_4_table`] is a plain listing
//! table over them, whose decimals DataFusion casts to the doubles of [`readings_schema`] (the
//! same cast DuckDB, pyarrow and Polars make), with every pruning DataFusion has.
//!
//! Files of layouts 1 to 3 ([`storage::layout3`]), read until compaction rewrites them, store
//! most values as a step from the row before, so `value` cannot be a per-row expression over
//! their columns: [`StoredReadings`] rebuilds it while scanning. Where a query needs `value`,
//! those files are read in whole row groups (no page pruning, no row filters) and a
//! [`RebuildValuesExec`] walks each partition's rows in file order; the query's filters apply
//! after it. Queries without `value` scan them as plain Parquet.

pub mod superseded;

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use storage::layout3::{VALUE_SCALE, VALUE_SCALED, ValueReader, stored_schema};
use storage::readings_schema;

/// Layout-4 readings files as a table of [`readings_schema`]: the stored decimals read as the
/// doubles they stand for.
pub fn layout_4_table(files: Vec<ListingTableUrl>) -> Result<ListingTable> {
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    ListingTable::try_new(
        ListingTableConfig::new_with_multi_paths(files)
            .with_listing_options(options)
            .with_schema(readings_schema()),
    )
}

/// Readings files of layouts 1 to 3 in [`stored_schema`] (layout 3's), with `value` rebuilt.
#[derive(Debug)]
pub struct StoredReadings {
    schema: SchemaRef,
    /// For queries without `value`: every pruning.
    pruned: ListingTable,
    /// For queries with `value`: whole row groups only.
    whole_row_groups: ListingTable,
    /// Positions in [`stored_schema`].
    value: usize,
    scaled: usize,
    scale: usize,
    delta: usize,
}

impl StoredReadings {
    pub fn try_new(files: Vec<ListingTableUrl>) -> Result<Self> {
        let schema = stored_schema();
        let table = |format: ParquetFormat| {
            let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
            // The files' own schema: a layout-1 file lacks the coefficient and decimal
            // columns, which then read as null, so its numbers are the given ones.
            ListingTable::try_new(
                ListingTableConfig::new_with_multi_paths(files.clone())
                    .with_listing_options(options)
                    .with_schema(schema.clone()),
            )
        };
        let mut whole = TableParquetOptions::default();
        whole.global.enable_page_index = false;
        whole.global.pushdown_filters = false;
        let index = |name: &str| schema.index_of(name);
        Ok(Self {
            pruned: table(ParquetFormat::default())?,
            whole_row_groups: table(ParquetFormat::default().with_options(whole))?,
            value: index("value")?,
            scaled: index(VALUE_SCALED)?,
            scale: index(VALUE_SCALE)?,
            delta: index("delta")?,
            schema,
        })
    }

    /// Whether `filter` reads a column whose stored form is not what the table shows: the file's
    /// statistics of those columns say nothing about the values.
    fn reads_value(filter: &Expr) -> bool {
        filter
            .column_refs()
            .iter()
            .any(|c| matches!(c.name.as_str(), "value" | VALUE_SCALED | VALUE_SCALE))
    }
}

#[async_trait::async_trait]
impl TableProvider for StoredReadings {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let mut support = self.pruned.supports_filters_pushdown(filters)?;
        for (s, f) in support.iter_mut().zip(filters) {
            if Self::reads_value(f) {
                *s = TableProviderFilterPushDown::Unsupported;
            }
        }
        Ok(support)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> =
            projection.map_or_else(|| (0..self.schema.fields().len()).collect(), Vec::clone);
        if !wanted.contains(&self.value) {
            return self.pruned.scan(state, projection, filters, limit).await;
        }
        // What the rebuild needs besides what the query wants, after it.
        let mut read = wanted.clone();
        for c in [self.scaled, self.scale, self.delta] {
            if !read.contains(&c) {
                read.push(c);
            }
        }
        let position = |c: usize| read.iter().position(|&r| r == c).unwrap_or_default();
        let input = self
            .whole_row_groups
            .scan(state, Some(&read), filters, limit)
            .await?;
        Ok(Arc::new(RebuildValuesExec::new(
            input,
            Arc::new(self.schema.project(&wanted)?),
            wanted.len(),
            [
                position(self.value),
                position(self.scaled),
                position(self.scale),
                position(self.delta),
            ],
        )))
    }
}

/// Replaces the stored `value` column of its input with the values as sent ([`ValueReader`]),
/// one reader per partition, and drops the columns only the rebuild needed. Its input must give
/// each partition's rows in file order, in whole row groups: a Parquet scan without page
/// pruning or row filters, directly below.
#[derive(Debug)]
struct RebuildValuesExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    /// The output is the input's first `keep` columns.
    keep: usize,
    /// The input positions of value, value_scaled, value_scale and delta.
    columns: [usize; 4],
    properties: Arc<PlanProperties>,
}

impl RebuildValuesExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        keep: usize,
        columns: [usize; 4],
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            schema,
            keep,
            columns,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for RebuildValuesExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RebuildValuesExec")
    }
}

impl ExecutionPlan for RebuildValuesExec {
    fn name(&self) -> &str {
        "RebuildValuesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    // The rows must reach the rebuild in file order, not redistributed.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "RebuildValuesExec takes one input, not {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.schema.clone(),
            self.keep,
            self.columns,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let (schema, keep, [value, scaled, scale, delta]) =
            (self.schema.clone(), self.keep, self.columns);
        let mut reader = ValueReader::default();
        let rebuilt = input.map(move |batch| {
            let batch = batch?;
            let column = |i: usize| batch.column(i);
            let given = column(value)
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("value is not float64".into())
                })?;
            let values = reader.read(
                given,
                column(scaled).as_primitive_opt::<Int64Type>(),
                column(scale).as_primitive_opt::<Float64Type>(),
                column(delta).as_primitive_opt::<Float64Type>(),
            )?;
            let mut columns: Vec<ArrayRef> = batch.columns()[..keep].to_vec();
            columns[value] = Arc::new(values);
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rebuilt,
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Float64Array, Int64Array};
    use datafusion::prelude::SessionContext;

    use storage::layout3::write_row_groups;
    use storage::{StoredReading, file_name, sort_and_dedupe, to_record_batch};

    use super::*;

    /// [`test_support::register_series`] as stored rows, in key order.
    fn register_rows() -> Vec<StoredReading> {
        let mut rows: Vec<_> = test_support::register_series()
            .into_iter()
            .map(|reading| StoredReading {
                gateway: test_support::gateway(),
                reading,
            })
            .collect();
        sort_and_dedupe(&mut rows);
        rows
    }

    /// The registers in one layout-3 file of 7-row row groups, as the `readings` table, with the
    /// rows as sent.
    async fn table() -> (tempfile::TempDir, SessionContext, RecordBatch) {
        let logical = to_record_batch(&register_rows(), 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(2, 2));
        write_row_groups(std::fs::File::create(&path).unwrap(), &logical, 7).unwrap();
        let url = ListingTableUrl::parse(path.to_string_lossy()).unwrap();
        // Batches smaller than a row group: a series' steps run on from batch to batch.
        let config = datafusion::prelude::SessionConfig::new().with_batch_size(5);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table(
            "readings",
            Arc::new(StoredReadings::try_new(vec![url]).unwrap()),
        )
        .unwrap();
        (dir, ctx, logical)
    }

    async fn query(ctx: &SessionContext, sql: &str) -> RecordBatch {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let schema = batches.first().map(|b| b.schema()).unwrap();
        arrow::compute::concat_batches(&schema, &batches).unwrap()
    }

    /// (meter, ts, value bits) of the logical rows that `keep` selects.
    fn expected(
        logical: &RecordBatch,
        keep: impl Fn(&str, i64, f64) -> bool,
    ) -> Vec<(String, i64, u64)> {
        let meter = logical.column(2).as_string::<i32>();
        let ts = logical
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let value = logical.column(7).as_primitive::<Float64Type>();
        (0..logical.num_rows())
            .filter(|&i| keep(meter.value(i), ts.value(i), value.value(i)))
            .map(|i| {
                (
                    meter.value(i).to_owned(),
                    ts.value(i),
                    value.value(i).to_bits(),
                )
            })
            .collect()
    }

    fn rows(b: &RecordBatch) -> Vec<(String, i64, u64)> {
        let meter = b.column(0).as_string::<i32>();
        let ts = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let value = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        (0..b.num_rows())
            .map(|i| {
                (
                    meter.value(i).to_owned(),
                    ts.value(i),
                    value.value(i).to_bits(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn values_come_back_as_sent_under_filters() {
        let (_dir, ctx, logical) = table().await;
        // A late time window of one meter.
        let from = 1_767_225_600_000 + 33 * 900_000;
        let got = query(
            &ctx,
            &format!(
                "SELECT meter, CAST(ts AS BIGINT) AS t, value FROM readings \
                 WHERE meter = 'm2' AND ts > to_timestamp_millis({from}) ORDER BY ts"
            ),
        )
        .await;
        let want = expected(&logical, |m, ts, _| m == "m2" && ts > from);
        assert!(want.len() > 20);
        assert_eq!(rows(&got), want);
        // A filter on value itself is applied to the rebuilt values.
        let got = query(
            &ctx,
            "SELECT meter, CAST(ts AS BIGINT) AS t, value FROM readings \
             WHERE value > 10050 ORDER BY meter, ts",
        )
        .await;
        let want = expected(&logical, |_, _, v| v > 10050.0);
        assert!(!want.is_empty() && want.len() < logical.num_rows());
        assert_eq!(rows(&got), want);
    }

    #[tokio::test]
    async fn queries_without_value_scan_the_files_as_they_are() {
        let (_dir, ctx, logical) = table().await;
        let plan = query(&ctx, "EXPLAIN SELECT sum(delta) FROM readings").await;
        let text = arrow::util::pretty::pretty_format_batches(&[plan])
            .unwrap()
            .to_string();
        assert!(!text.contains("RebuildValuesExec"), "{text}");
        let plan = query(&ctx, "EXPLAIN SELECT max(value) FROM readings").await;
        let text = arrow::util::pretty::pretty_format_batches(&[plan])
            .unwrap()
            .to_string();
        assert!(text.contains("RebuildValuesExec"), "{text}");
        let got = query(&ctx, "SELECT count(delta), count(value) FROM readings").await;
        let count = |i: usize| got.column(i).as_primitive::<Int64Type>().value(0) as usize;
        let delta = logical.column(8);
        assert_eq!(count(0), delta.len() - delta.null_count());
        assert_eq!(count(1), logical.num_rows());
    }
}
