"""dcsd train's default real-data run numbers domains and global cameras as the zoo's weights
do: its datasets default to DATASET_NAMES, the order the zoo's cards record."""

from reid_data_fixtures import make_cuhk03, make_cuhksysu, make_duke, make_market, make_msmt17

import dcsd
from dcsd.cli import build_parser
from dcsd.cli.train import load_domains, resolve_recipe
from dcsd.data import MultiDomainDataset


def test_a_default_run_numbers_cameras_as_the_zoo_card(tmp_path):
    for make in (make_msmt17, make_cuhk03, make_duke, make_cuhksysu, make_market):
        make(tmp_path)
    args = build_parser().parse_args(["train", "--data-root", str(tmp_path)])
    config, _ = resolve_recipe(args)
    train, test = load_domains(config)
    data = MultiDomainDataset(train)
    for name in dcsd.list_pretrained():
        card = dcsd.get_pretrained_cfg(name)
        # The card's datasets in domain order, and its count of global camera IDs.
        assert tuple(data.domain_names) == card.datasets, name
        assert data.num_cameras == card.num_cameras == 32, name
    # Global camera IDs as the paper's Fig. 3 numbers them (Market 0-5, CUHK-SYSU 6, ...).
    assert data.camera_offsets == [0, 6, 7, 15, 17]
    assert test == []
