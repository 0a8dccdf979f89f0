//! The local file system as DataFusion reads it, with one addition: a readings file that a
//! compaction moved out of the readings tree after a query listed it is read from where it
//! went, `<data_dir>/superseded/date=…/` (see `storage`, "Generations"), until the grace period
//! ends. Without it, a query planned just before a compaction would fail opening, or half-way
//! through reading, a file that still holds the rows it planned for.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// [`LocalFileSystem`], which reads a compacted-away readings file from `superseded/`.
#[derive(Debug, Default)]
pub struct FollowSuperseded {
    inner: LocalFileSystem,
}

impl FollowSuperseded {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl fmt::Display for FollowSuperseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FollowSuperseded({})", self.inner)
    }
}

/// Where compaction moves `location` (`…/readings/date=D/part-….parquet`):
/// `…/superseded/date=D/part-….parquet`. `None` for any other path.
fn moved(location: &Path) -> Option<Path> {
    let parts: Vec<_> = location.parts().collect();
    let n = parts.len();
    (n >= 3
        && parts[n - 3].as_ref() == storage::READINGS
        && parts[n - 2].as_ref().starts_with("date=")
        && storage::parse_file_name(parts[n - 1].as_ref()).is_some())
    .then(|| {
        let mut to = parts.clone();
        to[n - 3] = storage::SUPERSEDED.into();
        Path::from_iter(to)
    })
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

#[async_trait::async_trait]
impl ObjectStore for FollowSuperseded {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.inner.get_opts(location, options.clone()).await {
            Err(e) if not_found(&e) => match moved(location) {
                Some(to) => {
                    let mut found = self.inner.get_opts(&to, options).await?;
                    // Under the name it was listed by: a listing table keeps only files under
                    // its own path, and would silently drop one that answered from elsewhere.
                    found.meta.location = location.clone();
                    Ok(found)
                }
                None => Err(e),
            },
            r => r,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.inner.get_ranges(location, ranges).await {
            Err(e) if not_found(&e) => match moved(location) {
                Some(to) => self.inner.get_ranges(&to, ranges).await,
                None => Err(e),
            },
            r => r,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[test]
    fn only_a_published_readings_file_has_a_superseded_place() {
        let p = |s: &str| Path::from(s);
        assert_eq!(
            moved(&p(
                "/d/readings/date=2026-01-01/part-000000000001-000000000001.parquet"
            )),
            Some(p(
                "/d/superseded/date=2026-01-01/part-000000000001-000000000001.parquet"
            ))
        );
        assert_eq!(moved(&p("/d/readings/date=2026-01-01/notes.parquet")), None);
        assert_eq!(
            moved(&p("/d/rollups/daily/date=2026-01-01/rollup.parquet")),
            None
        );
    }

    #[tokio::test]
    async fn a_file_moved_after_it_was_listed_is_read_from_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let name = storage::file_name(1, 1);
        let from = dir.path().join("readings/date=2026-01-01");
        let to = dir.path().join("superseded/date=2026-01-01");
        std::fs::create_dir_all(&from).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(from.join(&name), b"rows of generation 1").unwrap();
        let location = Path::from_filesystem_path(from.join(&name)).unwrap();
        let store = FollowSuperseded::new();
        assert_eq!(
            store.get_ranges(&location, &[0..4, 5..7]).await.unwrap(),
            [Bytes::from_static(b"rows"), Bytes::from_static(b"of")]
        );
        std::fs::rename(from.join(&name), to.join(&name)).unwrap();
        assert_eq!(
            store.get_ranges(&location, &[5..7, 8..18]).await.unwrap(),
            [Bytes::from_static(b"of"), Bytes::from_static(b"generation")]
        );
        let head = store.head(&location).await.unwrap();
        assert_eq!(head.location, location, "the name it was listed by");
        let whole = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(whole, Bytes::from_static(b"rows of generation 1"));
        // Gone from both places (after the grace period): not found, not another file.
        std::fs::remove_file(to.join(&name)).unwrap();
        let err = store
            .get_ranges(&location, &[0..4, 5..7])
            .await
            .unwrap_err();
        assert!(not_found(&err), "{err}");
    }
}
