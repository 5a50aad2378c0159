"""The crystallographic hierarchy derived from spglib, checked against facts of the International Tables."""

from __future__ import annotations

import numpy as np
import pytest

from cbedtdc import crystallography as cr
from cbedtdc.classes import TOP20


def test_the_230_groups_fall_into_the_textbook_numbers_of_classes():
    groups = cr.all_space_groups()
    assert [g.number for g in groups] == list(range(1, 231))
    counts = {level: len({getattr(g, level) for g in groups}) for level in
              ("crystal_system", "bravais_lattice", "laue_class", "point_group")}
    assert counts == {"crystal_system": 7, "bravais_lattice": 14, "laue_class": 11, "point_group": 32}
    assert {level: len(cr.level_classes(level)) for level in counts} == counts
    assert len(cr.level_classes("space_group")) == 230


def test_crystal_systems_cover_the_number_ranges_of_the_tables():
    # ITA numbers the groups system by system: 1-2, 3-15, 16-74, 75-142, 143-167, 168-194, 195-230
    ranges = {"triclinic": (1, 2), "monoclinic": (3, 15), "orthorhombic": (16, 74), "tetragonal": (75, 142),
              "trigonal": (143, 167), "hexagonal": (168, 194), "cubic": (195, 230)}
    for system, (lo, hi) in ranges.items():
        assert {cr.space_group_info(n).crystal_system for n in range(lo, hi + 1)} == {system}


@pytest.mark.parametrize("number, symbol, system, lattice, laue, point_group", [
    (1, "P1", "triclinic", "aP", "-1", "1"),
    (14, "P2_1/c", "monoclinic", "mP", "2/m", "2/m"),
    (15, "C2/c", "monoclinic", "mC", "2/m", "2/m"),
    (38, "Amm2", "orthorhombic", "oC", "mmm", "mm2"),  # A centring is the base-centred Bravais type
    (62, "Pnma", "orthorhombic", "oP", "mmm", "mmm"),
    (139, "I4/mmm", "tetragonal", "tI", "4/mmm", "4/mmm"),
    (148, "R-3", "trigonal", "hR", "-3", "-3"),
    (150, "P321", "trigonal", "hP", "-3m", "32"),  # trigonal on a hexagonal lattice
    (166, "R-3m", "trigonal", "hR", "-3m", "-3m"),
    (187, "P-6m2", "hexagonal", "hP", "6/mmm", "-6m2"),
    (194, "P6_3/mmc", "hexagonal", "hP", "6/mmm", "6/mmm"),
    (216, "F-43m", "cubic", "cF", "m-3m", "-43m"),
    (225, "Fm-3m", "cubic", "cF", "m-3m", "m-3m"),
    (229, "Im-3m", "cubic", "cI", "m-3m", "m-3m"),
])
def test_spot_checks_of_symbols_and_classes(number, symbol, system, lattice, laue, point_group):
    g = cr.space_group_info(number)
    assert (g.symbol, g.crystal_system, g.bravais_lattice, g.laue_class, g.point_group) == \
        (symbol, system, lattice, laue, point_group)
    assert cr.sg_name(number) == f"{symbol} ({number})"


def test_reflection_conditions_of_screw_axes_glides_and_centring():
    p21 = set(cr.absent_reflections(4))  # P2_1 (unique axis b): 0k0 with k odd only
    assert p21 == {(0, k, 0) for k in range(-5, 6, 2)}
    p21c = set(cr.absent_reflections(14))  # h0l: l = 2n (c glide), 0k0: k = 2n
    assert (1, 0, 1) in p21c and (1, 0, 2) not in p21c and (0, 3, 0) in p21c and (1, 1, 1) not in p21c
    fd3m = set(cr.absent_reflections(227))  # F centring plus the d glide: h00 needs h = 4n
    assert (2, 0, 0) in fd3m and (4, 0, 0) not in fd3m and (1, 1, 0) in fd3m and (1, 1, 1) not in fd3m
    p61 = set(cr.absent_reflections(169))  # P6_1: 000l needs l = 6n
    assert {(0, 0, l) for l in range(1, 7)} & p61 == {(0, 0, l) for l in range(1, 6)}
    r3 = set(cr.absent_reflections(146))  # R on hexagonal axes (obverse): -h + k + l = 3n
    assert all((-h + k + l) % 3 for h, k, l in r3) and (0, 0, 3) not in r3 and (0, 0, 1) in r3
    assert cr.absent_reflections(1) == cr.absent_reflections(2) == ()


def test_extinction_classes_join_only_what_kinematic_diffraction_cannot_separate():
    info = cr.space_group_info
    assert info(1).extinction_id == info(2).extinction_id == 1  # P1 and P-1
    assert info(216).extinction_id == info(225).extinction_id  # F-43m and Fm-3m
    assert info(225).extinction_class == "m-3m F: F432, F-43m, Fm-3m"
    assert info(14).extinction_class == "2/m P: P2_1/c"  # alone
    assert [g.number for g in cr.all_space_groups() if g.extinction_id == info(14).extinction_id] == [14]
    assert info(227).extinction_id != info(225).extinction_id  # the d glide shows
    assert info(169).extinction_id == info(170).extinction_id != info(171).extinction_id  # P6_1 = P6_5, not P6_2


def test_extinction_groups_reproduce_the_old_hand_list_of_the_top20():
    hand = [[1, 2], [216, 225], [4, 11], [5, 8, 12]]  # evaluate.friedel_groups, typed by hand before
    assert cr.extinction_groups(TOP20) == sorted(hand)
    assert cr.extinction_groups([14, 62]) == []
    groups_230 = cr.extinction_groups(range(1, 231))
    assert sum(len(g) for g in groups_230) + len(cr.level_classes("extinction_class")) - len(groups_230) == 230
    with pytest.raises(ValueError, match=r"space group 0 is not a space-group number; allowed: integers 1\.\.230"):
        cr.extinction_groups([0, 1])


def test_hierarchy_labels_map_to_the_smallest_member_and_its_name():
    assert cr.hierarchy_labels([14, 225, 2], "space_group").tolist() == [14, 225, 2]
    assert cr.hierarchy_labels([14, 225, 2], "crystal_system", names=True) == ["monoclinic", "cubic", "triclinic"]
    assert cr.hierarchy_labels([14, 11], "extinction_class").tolist() == [14, 4]
    assert cr.hierarchy_labels(np.array([225, 216]), "point_group").tolist() == [221, 215]
    assert cr.hierarchy_labels([14, 0, -1, 999], "laue_class").tolist() == [3, -1, -1, -1]  # no prediction
    assert cr.hierarchy_labels([], "laue_class").tolist() == []
    with pytest.raises(ValueError, match="unknown hierarchy level 'family'; allowed: crystal_system, bravais"):
        cr.hierarchy_labels([14], "family")
    with pytest.raises(ValueError, match="integer space-group numbers"):
        cr.hierarchy_labels([14.5], "laue_class")


def test_every_level_is_coarser_than_the_next():
    """A class of a finer level lies inside one class of each coarser level; the Bravais lattices cross the
    systems (hP holds trigonal and hexagonal groups), as they should."""
    chains = [("crystal_system", "laue_class"), ("laue_class", "point_group"),
              ("laue_class", "extinction_class"), ("bravais_lattice", "extinction_class"),
              ("point_group", "space_group"), ("extinction_class", "space_group")]
    sgs = np.arange(1, 231)
    for coarse, fine in chains:
        c, f = cr.hierarchy_labels(sgs, coarse), cr.hierarchy_labels(sgs, fine)
        assert all(len(set(c[f == v])) == 1 for v in set(f)), (coarse, fine)
    hp = [g.crystal_system for g in cr.all_space_groups() if g.bravais_lattice == "hP"]
    assert set(hp) == {"trigonal", "hexagonal"}


def test_the_table_is_built_once_and_cached():
    cr._table.cache_clear()
    first = cr.all_space_groups()
    assert cr.all_space_groups() is first and len(first) == 230
