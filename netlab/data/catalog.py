"""The built-in dataset catalog: each dataset's files, canonical source URLs, sizes and SHA-256.

A file's ``rel`` is its place in the data-folder layout (``planetoid/ind.cora.x``); the same layout
is used by ``config.data.data_dir``, ``$NETLAB_DATA_DIR``, the download cache and a mirror
(``$NETLAB_DATASET_MIRROR``), so one folder serves all four. The URLs are those PyTorch Geometric
and the papers' own repositories download from; the checksums pin the bytes the authors published
(the offline copies netlab's tests and benchmarks were run on), so a changed upstream file is
refused rather than trained on. Later issues add their datasets here (or call
``registry.register``).

Sources:
- Planetoid (Yang et al., ICML 2016), raw ``ind.<name>.*`` files of kimiyoung/planetoid ``data/``,
  the URL PyG's ``Planetoid`` reads. PubMed is catalogued without a checksum (no verified copy was
  available when the table was written): it is downloaded and used unverified, and ``list`` says so.
- Geom-GCN (Pei et al., ICLR 2020), graphdml-uiuc-jlu/geom-gcn ``new_data/<name>/`` (graph and
  features) and ``splits/`` (the 10 fixed 60/20/20 splits), the URLs of PyG's ``WebKB``/``Actor``.
- LightGCN (He et al., SIGIR 2020), gusye1234/LightGCN-PyTorch ``data/gowalla`` and ``data/lastfm``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
GEOM_GCN_URL = "https://raw.githubusercontent.com/graphdml-uiuc-jlu/geom-gcn/master"
LIGHTGCN_URL = "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data"


@dataclasses.dataclass(frozen=True)
class File:
    """One file of a dataset: its place in the data folder, where to download it, what it hashes
    to. ``sha256``/``size`` None: not pinned (downloaded and used without verification)."""

    rel: str
    url: str
    sha256: Optional[str] = None
    size: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named set of files; ``requires`` names datasets it reads too (geom-cora reads cora)."""

    name: str
    files: tuple
    description: str = ""
    requires: tuple = ()


# sha256 size name, per folder of the data layout (the SHA256SUMS of the offline copies).
_SUMS = """
[geom_gcn/cornell]
c4522a00cc40873c8a04a3a07c49e24a48a507eb284ac9c9f2d3e0590351bbb7 2001 out1_graph_edges.txt
cf5a3ca346cdd1210b8342e22517fcbbdae658065b7a3145f59350e50e6236a3 624308 out1_node_feature_label.txt
[geom_gcn/cornell/splits]
14022a1e19ec7fc0a07a2c06a785a2f9dc52809dbcd1c14fc318f7800675d73f 704 cornell_split_0.6_0.2_0.npz
5568fa27e968a724c92211bf97026a36a08893cf94b218043e49b4c973c35cfb 700 cornell_split_0.6_0.2_1.npz
763fc1f423395e4172617fa5b6bc0d7adad2241e5fedd1a4f0a098a67f9dc8e9 695 cornell_split_0.6_0.2_2.npz
4334321cd9ec42de9d51107fb9a6dc310512e0921bc1cff0f390301ee37315fa 701 cornell_split_0.6_0.2_3.npz
2b6b3ef396f4dc7fcdc276fb16b88bb87409b25879dd672b3a506eca844dd8d7 759 cornell_split_0.6_0.2_4.npz
1a40ef8b20aa9e1aa850e1abdaba3efac1f66c98ef2c6a59eadefa21136ece6b 754 cornell_split_0.6_0.2_5.npz
bcddf4ab59eae4c7d47b8a6cec9025a54ec0e6d3f3bdcd7678e201f25ace4642 758 cornell_split_0.6_0.2_6.npz
2b497e12dfc123d7e7c9bb4fc4a82b5bee18409e109a3e3a04da439cacec964d 693 cornell_split_0.6_0.2_7.npz
5c4e110d252d7ad156b2e4cd34b6dbd1cecbcc1755f8d72e932cc2a54f2b643c 701 cornell_split_0.6_0.2_8.npz
80f1531807194d301affbf6f879a4ab4f56a19bdccb62d192e3ecd1b5275f052 704 cornell_split_0.6_0.2_9.npz
[geom_gcn/film]
997cdce67ea9c29257d3ffe796328391931901cf823830affa453178b60e2c3e 323820 out1_graph_edges.txt
1d5cdd094f8b91e770f6decfca85b35cf42f75d1efb51055fd6af16e11820ff8 207718 out1_node_feature_label.txt
[geom_gcn/film/splits]
4505a41d4e90abd94d1ec22571ce528b09ad7cf20d87f764aebd4177590767f5 4214 film_split_0.6_0.2_0.npz
1871b0d24e3977c41e378fd24acc8025b63f86b77739be77a5b558d1287f207d 4231 film_split_0.6_0.2_1.npz
d26680e911ef3ecc9fc2a26d90c9d35028c63aadd7a5aea774649d1496c282cb 4224 film_split_0.6_0.2_2.npz
6755ad5f6a0be8594b344af3d2261eed935b83b73c4d70136e1a7beea7f78cb0 4207 film_split_0.6_0.2_3.npz
328fdca62b25074f21f2922518e042f24b3b8a1fc378f9dfb2cae36439aed902 4233 film_split_0.6_0.2_4.npz
5b3161a8dc8de4b2e651ebd56d68e768d1377044895b325566117fe26ab81cb7 4224 film_split_0.6_0.2_5.npz
e251b38abd4d7931b5e9ae5aba99dcdf87f0be283bdf6e65421274a1c9ef1df6 4221 film_split_0.6_0.2_6.npz
12164ef9f5620a2f12a387f4f2b8636859d42201101d6d32829ade62d5a98326 4205 film_split_0.6_0.2_7.npz
405cd1f7f631f678119f8bf2405809e86614d532985beb59566fcf95abd35b3f 4217 film_split_0.6_0.2_8.npz
505691c5d41bb37b20d085415dcdde2e8e68b5bc4e1feb2c0e361308002012bb 4208 film_split_0.6_0.2_9.npz
[geom_gcn/splits_citeseer]
31d483e4c9cbdd031c35e284fbda3935bfda6901b8618e4ef0381af5b9143582 2266 citeseer_split_0.6_0.2_0.npz
1e02e3220676a90715b5a868b207dc19f49e5bc13ef1e8a8c8305fb46e028659 2284 citeseer_split_0.6_0.2_1.npz
910ce9d1a9c12f2ce84486fa7d1953d560c2cf57f9e0c213a4ae362ca56bff77 2261 citeseer_split_0.6_0.2_2.npz
e8c84d2e0099b3c0d692a68126c03370579f0cd83c0dab42b25a0fb3b94cb2c6 2278 citeseer_split_0.6_0.2_3.npz
a45c9e6b4abe527499a1a1bf545063cdc910c82ef4676f1ef4e483bb77712c8e 2122 citeseer_split_0.6_0.2_4.npz
fc0f6091daab2b0f37a3522dbc60052d9bce4209e7c06482f6beb61a4ed442b9 2123 citeseer_split_0.6_0.2_5.npz
c99f610ff84bf5f5c3fe71b548c3cdf9c9bf02185d0152432b290877df1c4a3b 2260 citeseer_split_0.6_0.2_6.npz
26bb7e5ea3aed014df5765af845fae70db9cdbb8875c46fc89cc4d6d042fb182 2269 citeseer_split_0.6_0.2_7.npz
f8efadce7a3732ac39ec6625f591c9ed0b4222d95257f25f2a05ad5518e4a7eb 2261 citeseer_split_0.6_0.2_8.npz
d9e586dad1886b3e1fdf3999140a192bb0cacea67c7849262ec862b8e7286cdf 2278 citeseer_split_0.6_0.2_9.npz
[geom_gcn/splits_cora]
619931e6c3f0248bf9c7b6be24680a0a617bcfaba661cb0d7afaee8e18a74a51 1989 cora_split_0.6_0.2_0.npz
d24be667034cb15a55bbf512dbae07b39c758eed66a9ba27106fa795422fe11c 1958 cora_split_0.6_0.2_1.npz
811fb695c4c9ab0a53ab3a665bf4232652a08a6e38faac5b43a7da43a8454b74 1967 cora_split_0.6_0.2_2.npz
9d9c19d88a689b76a4b97e8694ef8d20cb0f1b192bbd05a0d5649c91f0cb6ef4 1956 cora_split_0.6_0.2_3.npz
3040b6bc0ddfff3757d55f514becf0b1b6b2e382114bfb0bc900dbcbb58fca17 1942 cora_split_0.6_0.2_4.npz
52373862971060e366829930332acabaa90cc6f41019c52bf6c92e4c22f8f093 2008 cora_split_0.6_0.2_5.npz
07847ea94e8b19970cf86731f19869aac0c56310d27f687d0feb9553d7525dd6 1944 cora_split_0.6_0.2_6.npz
262573079c8b1f4bc043d32edd3d23a6c36f1d7258efe60c11a6197ba0eee560 1962 cora_split_0.6_0.2_7.npz
d6c6a2163aeadd103ae386e800e473d2388da866f3f464199180d9b0e2f7d6cc 1956 cora_split_0.6_0.2_8.npz
9d236d0cf723871d88dea567afe92d50c11d0ffba280349a5cc7f5f2ea42202f 1948 cora_split_0.6_0.2_9.npz
[geom_gcn/texas]
0fe85183243a78cbee9b85a684f8240963d04d1020d10e9cd2b8cfb25e33b476 2172 out1_graph_edges.txt
cf5a3ca346cdd1210b8342e22517fcbbdae658065b7a3145f59350e50e6236a3 624308 out1_node_feature_label.txt
[geom_gcn/texas/splits]
7ba77bf7a8856fcc0ab15623a611b8cdce994e820f577da914123fb4f45272b0 698 texas_split_0.6_0.2_0.npz
21cc244a96e3c51ad7993afb4dd227f90e467d82b964bb42d7d9fc500a6ef87f 701 texas_split_0.6_0.2_1.npz
b9e96a699ccf3a4c31ffbd03e52b25570889833425d20fa44e06c37b327cf61e 756 texas_split_0.6_0.2_2.npz
1a7deeb1285009789d5e6045d7e39f7d019c9223d9a75a2b7ce5e26d33b51f63 759 texas_split_0.6_0.2_3.npz
b5419ff3fe31adcae66fdb085d4f47d0b188e9436ab59f438632af969aafc674 702 texas_split_0.6_0.2_4.npz
68405fd1b9ff6105d99717220ecbd198785e338bf4a73abee722bbc9703d2667 691 texas_split_0.6_0.2_5.npz
8ad78b973164e70e5ac0d282e79adcbc6006e373909fbdfd72a13131e09040b8 756 texas_split_0.6_0.2_6.npz
a84bcbf997365bddf5fdf72ed49dc7e435e475f8c6210f8cdee7c8581a2bd6df 693 texas_split_0.6_0.2_7.npz
65ba65f296f91d40d2d7d3c9369b67415094a7e254c6eee48cd6d6531c586fdf 762 texas_split_0.6_0.2_8.npz
4306981d654ad8835c000c1f73fb6c1e60dfe99e26c13a6073f3b0f4cc3ce6ee 693 texas_split_0.6_0.2_9.npz
[geom_gcn/wisconsin]
ebd213511c88fce1eda450c2f920600c4b8cbb38f02384856bcc47c6ec1807ae 3606 out1_graph_edges.txt
a32b0aa38d42f0d36841e8a8cb646d197f0ff33a182ac75a2b4476aeed3c7e4b 856324 out1_node_feature_label.txt
[geom_gcn/wisconsin/splits]
f66f641e191d35d491cd3b63d6c2cd93c4b436da398984b44c19a8d4d7e7b1a5 805 wisconsin_split_0.6_0.2_0.npz
534aeb97266bd5a85a8587adf8eebad3f2e001c1240610f24b62c0ad0c2466ee 739 wisconsin_split_0.6_0.2_1.npz
047a5b641778ec3a4c76055fd7f18ecb2424c0952f20dfff7e1b17749d8acbdd 747 wisconsin_split_0.6_0.2_2.npz
706c27b4c51d046c0316f1e915f093e4a1fff48b3436b3e7c421eab596a99e77 810 wisconsin_split_0.6_0.2_3.npz
7ee813605eec086457aaff022cf3837f2f893fcf8bd37e3a8d2ff0c80e4c4f87 812 wisconsin_split_0.6_0.2_4.npz
8094ac2bdaf2cbea8f7a48df66a0800c809b2fd5942740e6b0441b660d3a0dd5 749 wisconsin_split_0.6_0.2_5.npz
c423a8deea9b18f9ecb6cfd703578e2159df167de01fe7e6195b88995010252d 735 wisconsin_split_0.6_0.2_6.npz
57ad808c8d4dd94dc4404124370bbcebb3dcc597c2bea6457bf05f220adf1527 733 wisconsin_split_0.6_0.2_7.npz
27d4d62a2a6aea2cdc399302237512ab0d64fb0c84e648112f97c5896274e42f 741 wisconsin_split_0.6_0.2_8.npz
3c149cd124a19021031609e0d7743a7be59aae4f88c8d38410138e8f06f5daaf 744 wisconsin_split_0.6_0.2_9.npz
[lightgcn/gowalla]
6ab3ab7aa1278da3717054c60258d88d2d2d78914fa62db2b13da9321e397cab 3635865 s_adj_mat.npz
099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3 1372559 test.txt
[lightgcn/lastfm]
c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded 579727 data1.txt
de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9 144867 test1.txt
5b5bd7cbe4d22f3cd333dbfc7ec4b995cb2bdb28d95b0e9c5fc5607079f7b69e 249214 trustnetwork.txt
[planetoid]
2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668 595021 ind.citeseer.allx
f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95 55623 ind.citeseer.ally
d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7 61987 ind.citeseer.graph
2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4 5000 ind.citeseer.test.index
539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21 260321 ind.citeseer.tx
55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce 24135 ind.citeseer.ty
d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6 31087 ind.citeseer.x
8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924 3014 ind.citeseer.y
9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543 257305 ind.cora.allx
2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71 47959 ind.cora.ally
58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d 59847 ind.cora.graph
297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875 5000 ind.cora.test.index
b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a 148025 ind.cora.tx
41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad 28135 ind.cora.ty
23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab 22119 ind.cora.x
94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1 4054 ind.cora.y
"""


def _parse(text: str) -> dict:
    out, folder = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            folder = line[1:-1]
        elif line:
            digest, size, name = line.split()
            out[f"{folder}/{name}"] = (digest, int(size))
    return out


SUMS = _parse(_SUMS)


def _file(rel: str, url: str) -> File:
    digest, size = SUMS.get(rel, (None, None))
    return File(rel, url, digest, size)


PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


def planetoid(name: str) -> Dataset:
    files = tuple(
        _file(f"planetoid/ind.{name}.{p}", f"{PLANETOID_URL}/ind.{name}.{p}")
        for p in PLANETOID_PARTS
    )
    return Dataset(name, files, f"Planetoid {name} (raw ind.{name}.* files, public split)")


def _splits(folder: str, name: str) -> tuple:
    return tuple(
        _file(
            f"geom_gcn/{folder}/{name}_split_0.6_0.2_{k}.npz",
            f"{GEOM_GCN_URL}/splits/{name}_split_0.6_0.2_{k}.npz",
        )
        for k in range(10)
    )


def geom_gcn(name: str) -> Dataset:
    files = tuple(
        _file(f"geom_gcn/{name}/{f}", f"{GEOM_GCN_URL}/new_data/{name}/{f}")
        for f in ("out1_graph_edges.txt", "out1_node_feature_label.txt")
    )
    desc = f"Geom-GCN {name} (graph, features, 10 fixed splits)"
    return Dataset(name, files + _splits(f"{name}/splits", name), desc)


def geom_gcn_splits(name: str) -> Dataset:
    desc = f"Geom-GCN's 10 fixed splits of Planetoid {name}"
    return Dataset(f"geom-{name}", _splits(f"splits_{name}", name), desc, requires=(name,))


def lightgcn(name: str, files: tuple) -> Dataset:
    return Dataset(
        name,
        tuple(_file(f"lightgcn/{name}/{f}", f"{LIGHTGCN_URL}/{name}/{f}") for f in files),
        f"{name} as split by LightGCN",
    )


def builtin() -> list:
    """Every dataset netlab's loaders read, in ``list`` order."""
    return [
        planetoid("cora"),
        planetoid("citeseer"),
        planetoid("pubmed"),
        geom_gcn_splits("cora"),
        geom_gcn_splits("citeseer"),
        *(geom_gcn(n) for n in ("cornell", "texas", "wisconsin", "film")),
        lightgcn("lastfm", ("data1.txt", "test1.txt", "trustnetwork.txt")),
        lightgcn("gowalla", ("s_adj_mat.npz", "test.txt")),
    ]
