"""The data sets fastcifar downloads itself, each one typed description (`DataSpec`): where its
official binary archive is and what it hashes to, the folder and files inside, the record
layout (label bytes, then 3,072 pixel bytes, CHW), the class names' file, the split sizes, the
per-channel statistics, and the names of its FFCV files. source.py reads any of them; a run
names one with --dataset.

CIFAR-100 is read with its 100 fine labels (the second of its two label bytes). Its archive's
SHA-256 is checked on download; the extracted files' own digests are not published, so a
folder of them is checked for its files' exact sizes (whole records of the known splits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PIXEL_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class DataSpec:
    name: str  # as --dataset names it
    title: str  # as messages name it
    url: str
    archive_name: str
    archive_sha256: str
    folder_name: str  # inside the archive, and inside --data-dir
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    names_file: str  # one class name per line
    label_bytes: int  # before each image's pixels
    label_byte: int  # which of them is the label
    train_images: int
    test_images: int
    classes: int
    # Per-channel mean and std on the 0..255 scale; None: those of the training split, computed
    # when it is read.
    statistics: tuple[tuple[float, float, float], tuple[float, float, float]] | None
    beton_names: dict[str, str]
    file_sha256: tuple[tuple[str, str], ...] = field(default=())  # () : sizes are checked

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXEL_BYTES

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.names_file)

    def expected_size(self, name: str) -> int | None:
        """The exact size of a data file when the split sizes say it (one file per split)."""
        if self.train_files == (name,):
            return self.train_images * self.record_bytes
        if self.test_files == (name,):
            return self.test_images * self.record_bytes
        return None


CIFAR10 = DataSpec(
    name="cifar10",
    title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    archive_name="cifar-10-binary.tar.gz",
    archive_sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    folder_name="cifar-10-batches-bin",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test_files=("test_batch.bin",),
    names_file="batches.meta.txt",
    label_bytes=1,
    label_byte=0,
    train_images=50_000,
    test_images=10_000,
    classes=10,
    # The values of the DAWNBench/Page recipe.
    statistics=((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    beton_names={"train": "cifar10_train.beton", "test": "cifar10_test.beton"},
    file_sha256=(
        ("data_batch_1.bin", "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
        ("data_batch_2.bin", "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
        ("data_batch_3.bin", "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
        ("data_batch_4.bin", "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
        ("data_batch_5.bin", "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
        ("test_batch.bin", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
        ("batches.meta.txt", "2ce042b1e0b48db4bb214408e6414ba18b2731c24af244f2d6c112fddf31af00"),
    ),
)

CIFAR100 = DataSpec(
    name="cifar100",
    title="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    archive_name="cifar-100-binary.tar.gz",
    # As TensorFlow Datasets records it (url_checksums/cifar100.txt; 168,513,733 bytes).
    archive_sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    folder_name="cifar-100-binary",
    train_files=("train.bin",),
    test_files=("test.bin",),
    names_file="fine_label_names.txt",
    label_bytes=2,  # coarse (superclass), then fine
    label_byte=1,
    train_images=50_000,
    test_images=10_000,
    classes=100,
    statistics=None,
    beton_names={"train": "cifar100_train.beton", "test": "cifar100_test.beton"},
)

SPECS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}
# A folder of one's own images (data/image_folder.py): no archive, so no DataSpec.
FOLDER = "folder"
DATASET_NAMES = (*SPECS, FOLDER)
