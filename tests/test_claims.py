"""Claim checks on real rows.

tests/data/claims_rows.parquet holds 41 rows copied from /work/shared/data: 25 Flipkart rows (title, description,
brand, prices and spec columns) and 16 Amazon rows (title, description, brand). Texts that stand for generated
descriptions are written here; the facts always come from the real rows. Tests marked as needing the shared
data run on the whole catalogs and skip where that folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from enrich.quality.claims import check, facts, faithful, type_check
from enrich.quality.learn import DEFAULT_THRESHOLDS, head_noun, learn
from enrich.quality.normalize import quantities
from enrich.quality.vocabulary import MARKETING, Thresholds, Vocabulary, base_vocabulary

REPO = Path(__file__).resolve().parent.parent
SHARED = next(
    (p for p in (REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data") if p.is_dir()), None
)
BASE = base_vocabulary()
# Low thresholds: 41 rows are too few for the defaults, which need 5 rows of evidence.
SMALL = Thresholds(
    min_as_fact=2, min_stated=2, min_unsupported_share=0.5, min_fact_share=0.5,
    min_type_titles=1, min_type_share=0.3, min_brand_rows=1,
)  # fmt: skip
FLIPKART_COLUMNS = (
    "brand", "retail_price", "discounted_price", "ideal_for", "occasion", "type", "pattern", "fabric", "color",
    "brand_color", "sleeve", "neck", "fit", "length", "number_of_contents_in_sales_package", "outer_material",
    "sole_material", "heel_height", "base_material", "material", "dial_color", "strap_color",
)  # fmt: skip


Real = tuple[str, list[tuple[str, str]], str]  # a Row whose description is there


def read_rows(path: Path, columns: tuple[str, ...]) -> dict[str, Real]:
    """id -> (title, attributes, description); attribute labels from the column names."""
    out: dict[str, Real] = {}
    for r in pl.read_parquet(path).iter_rows(named=True):
        attributes = [(c.replace("_", " ").capitalize(), str(r[c])) for c in columns if r.get(c) is not None]
        out[r["id"]] = (r["title"], attributes, r["content"])
    return out


ROWS = read_rows(REPO / "tests" / "data" / "claims_rows.parquet", FLIPKART_COLUMNS)
LEARNED = learn(ROWS.values(), BASE, SMALL)


def claims(
    row_id: str, text: str, vocabulary: Vocabulary = BASE, with_description: bool = False
) -> list[tuple[str, ...]]:
    title, attributes, description = ROWS[row_id]
    found = check(text, facts(title, attributes, description if with_description else None), vocabulary)
    return [(c.kind, c.surface, c.term) for c in found]


TAPE = "amz18-indsci-00221"  # 3M 88 Electrical Tape, .75-Inch by 66-Foot by .0085-Inch
RING = "amz18-office-01625"  # Nite Ize BigRing Steel, 2" Stainless Steel Key Chain Ring With 8 ... S-Biners
SHORTS_3 = "SRTEH2FF9KEDEFGF"  # Alisha Solid Women's Cycling Shorts; Fabric Cotton Lycra; Pack of 3
SHORTS_2 = "SRTEH2F6HUZMQ6SJ"  # the same, Pack of 2
CARDIGAN = "CGNEDFY77SGZTEQ2"  # Roadster Men's Zipper Solid Cardigan
SWEATER = "SWTED625BMZKJXHP"  # YK Self Design Round Neck Casual Boy's Sweater; Full Sleeve; 100% Acrylic
NIGHTY = "NDNEBA9V9FRP4HWZ"  # Fasense Women's Nighty; Sleeve Less; Square Neck
NIBS = "amz18-office-03269"  # Brause Calligraphy Nibs, "Rose" No 76 (3 Nibs Per Box)
LEDS = "amz18-indsci-02805"  # microtivity ... RGB Controllable LED, Common Anode (Pack of 12)
BELLIES = "SHOEH4GRSUBJGZXE"  # AW Bellies; Color Red; Outer material Patent Leather
RING_18K = "RNGE864HRSHWNANE"  # Karatcraft Triniya Promise Gold Diamond 18 K Ring
TOP = "TOPEE6YHA5UFMWKN"  # Kea Casual Sleeveless Solid Women's Top; Premium Viscous
PEN = "amz18-office-00952"  # Zebra F-301 Ballpoint Stainless Steel Retractable Pen ...
KIDS_WATCH = "WATDXN6HPRHJ5H3A"  # Disney ... Analog Watch - For Boys, Girls
MENS_WATCH = "WATE9MVXX3DZ5UKD"  # Skmei ... Analog-Digital Watch - For Men, Boys
FILE = "amz18-office-00345"  # AmazonBasics Expanding File, Letter Size - Black/Gray (2-Pack)
MARKER = (
    "amz18-office-02124"  # Sharpie 44002 Magnum Permanent Marker, Red (its description is of highlighters)
)
SHIRT = "SHTEDCZWARQ2HZXX"  # Parron Men's Solid Casual Shirt


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        # The same size in other spellings, and a decimal without its 0 in the title (".75-Inch").
        (TAPE, "A 0.75 inch tape, 66 feet long.", []),
        (TAPE, "A .75-in. tape, 66' long.", []),
        (TAPE, "66-ft roll of 0.0085 in thick tape", []),
        # Another unit than the title's, or another number.
        (TAPE, "a 0.75 ft tape", [("number", "0.75 ft", "0.75 ft")]),
        (TAPE, "66 in long", [("number", "66 in", "66 in")]),
        (TAPE, '12" wide', [("number", '12"', "12 in")]),
        (TAPE, "1,000 rolls", [("number", "1,000", "1000")]),
        # "in" as a preposition is no unit; a bare number needs the number anywhere in the facts.
        (TAPE, "fits 1 in every box", [("number", "1", "1")]),
        (RING, "a 2-inch ring", []),
        (RING, "a 2 ft ring", [("number", "2 ft", "2 ft")]),
        # Counts in words compare with counts in digits.
        (RING, "with eight s-biners", []),
        (RING, "with 9 s-biners", [("number", "9", "9")]),
        (SHORTS_3, "A set of three cycling shorts.", []),
        (SHORTS_3, "Two pairs of shorts.", [("number", "Two", "2")]),
        (SHORTS_2, "A set of two shorts.", []),
        (NIBS, "Sold as a set of two nibs.", [("number", "two", "2")]),
        (NIBS, "Half a dozen nibs", [("number", "Half a dozen", "6")]),
        (NIBS, "meia dúzia de penas", [("number", "meia dúzia", "6")]),
        (LEDS, "Dozens of uses.", []),
        (LEDS, "A dozen LEDs, two-pack", [("number", "two-pack", "2 ct")]),
    ],
)
def test_numbers_with_units_and_counts(row: str, text: str, expected: list[tuple[str, ...]]) -> None:
    assert claims(row, text) == expected


def test_three_pockets_and_3_pockets_are_one_claim() -> None:
    words, digits = claims(CARDIGAN, "Three pockets."), claims(CARDIGAN, "3 pockets.")
    assert words == [("detail", "pockets", "pocket"), ("number", "Three", "3")]
    assert [(k, t) for k, _, t in words] == [(k, t) for k, _, t in digits]


def test_real_description_with_counts_in_words() -> None:
    # "A dozen RGB LEDs" is the title's pack of 12; "Three of the 4 pins" is not in the title.
    assert claims(LEDS, ROWS[LEDS][2]) == [
        ("colour", "white", "white"),
        ("colour", "Red", "red"),
        ("colour", "Green", "green"),
        ("colour", "Blue", "blue"),
        ("number", "4", "4"),
        ("number", "Three", "3"),
    ]
    assert claims(NIBS, ROWS[NIBS][2]) == []  # "Sold as a set of three nibs." for "(3 Nibs Per Box)"


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        (SWEATER, "Navy-blue sweater.", [("colour", "Navy-blue", "navy")]),
        (SWEATER, "Available in reds and blues.", [("colour", "reds", "red"), ("colour", "blues", "blue")]),
        # Words that are colours only in colour context.
        (SWEATER, "A navy seal pattern.", []),
        (SWEATER, "Orange juice stains wash out; olive oil too.", []),
        (SWEATER, "Orange and teal.", [("colour", "Orange", "orange"), ("colour", "teal", "teal")]),
        (BELLIES, "Red-and-black bellies.", [("colour", "black", "black")]),
        (RING_18K, "A golden ring.", []),
        (RING_18K, "A rose gold ring.", [("colour", "rose gold", "rose gold")]),
        (RING_18K, "A gold ring with a rose motif.", []),
        (FILE, "Grey files.", []),
        (FILE, "Gray files.", []),
    ],
)
def test_colours(row: str, text: str, expected: list[tuple[str, ...]]) -> None:
    assert claims(row, text) == expected


def test_hyphenated_colour_in_the_facts_supports_its_parts() -> None:
    # The cardigan's description says "Navy blue and olive green cardigan".
    assert claims(CARDIGAN, "A navy-blue cardigan, navy and blue, olive-green.", with_description=True) == []
    assert claims(CARDIGAN, "A navy-blue cardigan, navy and blue, olive-green.") == [
        ("colour", "navy-blue", "navy"),
        ("colour", "blue", "blue"),
        ("colour", "olive", "olive"),
        ("colour", "green", "green"),
    ]
    # "Purple Multicolor" in the nighty's description supports another spelling.
    assert claims(NIGHTY, "A purple, multi-coloured nighty.") == [
        ("colour", "purple", "purple"),
        ("colour", "multi-coloured", "multicolour"),
    ]
    assert claims(NIGHTY, "A purple, multi-coloured nighty.", with_description=True) == []


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        (TOP, "A velvet-topped tank top.", [("material", "velvet", "velvet")]),
        (PEN, "A stainless steel barrel.", []),
        (PEN, "A steel pen.", []),
        (PEN, "An aluminium barrel.", [("material", "aluminium", "aluminium")]),
        (PEN, "An aluminum barrel.", [("material", "aluminum", "aluminium")]),
        (SHORTS_3, "Cotton and spandex shorts.", []),  # "Cotton Lycra": spandex is lycra
        (SHORTS_3, "Polyester shorts.", [("material", "Polyester", "polyester")]),
    ],
)
def test_materials(row: str, text: str, expected: list[tuple[str, ...]]) -> None:
    assert claims(row, text) == expected


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        (KIDS_WATCH, "A watch for kids.", []),  # "For Boys, Girls"
        (KIDS_WATCH, "For boys and girls.", []),
        (KIDS_WATCH, "For men.", [("group", "men", "men")]),
        (MENS_WATCH, "For women.", [("group", "women", "women")]),
        (MENS_WATCH, "For ladies.", [("group", "ladies", "women")]),
        (KIDS_WATCH, "Relógio infantil para meninos.", []),
        (KIDS_WATCH, "Relógio masculino.", [("group", "masculino", "men")]),
        (PEN, "Keep out of reach of children.", []),
        (PEN, "Pens for children.", [("group", "children", "kid")]),
    ],
)
def test_groups(row: str, text: str, expected: list[tuple[str, ...]]) -> None:
    assert claims(row, text) == expected


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        (SWEATER, "A crew neck sweater.", []),  # "Round Neck"
        (SWEATER, "A v-neck sweater.", [("detail", "v-neck", "v neck")]),
        (SWEATER, "Long sleeves.", []),  # "Full Sleeve"
        (SWEATER, "Half sleeves.", [("detail", "Half sleeves", "half sleeve")]),
        (NIGHTY, "A sleeveless nighty.", []),  # "Sleeve Less"
        (NIGHTY, "A hooded nighty.", [("detail", "hooded", "hood")]),
        (
            CARDIGAN,
            "With a zipper and three pockets.",
            [("detail", "pockets", "pocket"), ("number", "three", "3")],
        ),
        (CARDIGAN, "A pocket-sized cardigan.", []),
        (CARDIGAN, "A zip-up cardigan.", []),  # "Zipper" in the title
    ],
)
def test_details(row: str, text: str, expected: list[tuple[str, ...]]) -> None:
    assert claims(row, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Suéter azul marinho de algodão com gola redonda e manga longa.",
            [("colour", "azul marinho", "navy"), ("material", "algodão", "cotton")],
        ),
        ("Três bolsos.", [("detail", "bolsos", "pocket"), ("number", "Três", "3")]),
        (
            "Suéter cinza para meninos, sem mangas.",
            [("colour", "cinza", "grey"), ("detail", "sem mangas", "sleeveless")],
        ),
    ],
)
def test_portuguese_text_against_english_facts(text: str, expected: list[tuple[str, ...]]) -> None:
    assert claims(SWEATER, text) == expected


def test_brands_learned_from_the_brand_attribute() -> None:
    assert {"BIC", "Pilot", "Zebra Pen", "Sharpie", "AT-A-GLANCE", "Roadster"} <= set(LEARNED.brands.values())
    assert claims(MARKER, "Zebra Pen and BIC highlighters.", LEARNED) == [
        ("brand", "Zebra Pen", "zebra pen"),
        ("brand", "BIC", "bic"),
    ]
    # Written otherwise than the catalog writes the brand: a word, not the brand.
    assert claims(MARKER, "A zebra pen print; Sharpie markers.", LEARNED) == []
    assert claims("amz18-office-00612", "Pilot pens; a pilot light.", LEARNED) == []  # its own brand
    added = BASE.with_changes(add={"brand": ["A World Of Deals"]})
    assert claims(MARKER, "From A World of Deals.", added) == [
        ("brand", "A World of Deals", "a world of deal")
    ]


def test_a_rows_own_attribute_values_are_never_unsupported() -> None:
    for title, attributes, _ in ROWS.values():
        text = ". ".join(value for _, value in attributes)
        assert check(text, facts(title, attributes), LEARNED) == [], title


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 ft, 10 feet, 10-foot, 10'", {("10", "ft")}),
        ("12\", 12 inch, 12-Inches, 12'', 12\u201d", {("12", "in")}),
        ("1,000 count, 1000-Pack, 1000 pcs", {("1000", "ct")}),
        ("1 in. wide, 2 in x 3 in, 4 in deep", {("1", "in"), ("2", "in"), ("3", "in"), ("4", "in")}),
        ("fits 1 in every pocket, a 3-in-1 tool", {("1", ""), ("3", "")}),
        ("3M tape, 5 m long, 15A fuse, 2 a day", {("3", ""), ("5", "m"), ("15", "a"), ("2", "")}),
        (".75-Inch by 66-Foot, No.5", {("0.75", "in"), ("66", "ft"), ("5", "")}),
    ],
)
def test_quantities_keep_the_rules_of_unsupported_numbers(text: str, expected: set[tuple[str, str]]) -> None:
    assert {(number, unit) for number, unit, _ in quantities(text)} == expected


def test_learned_vocabulary_of_a_small_slice() -> None:
    assert [(t.term, t.kind, t.stated, t.unsupported, t.as_fact) for t in LEARNED.top_terms(5)] == [
        ("black", "colour", 7, 4, 6),
        ("party", "detail", 2, 1, 3),
    ]
    assert LEARNED.types["top"] == 5 and LEARNED.types["shorts"] == 2
    assert head_noun("Alisha Solid Women's Cycling Shorts", BASE) == "shorts"
    assert head_noun("Skmei AD1031-Black Formal Analog-Digital Watch - For Men, Boys", BASE) == "watch"
    # "Box" and "Dozen" are no heads (a boilerplate word, a count): the head is the word before them.
    assert head_noun("Pilot Precise V5 Retractable Blue Pens Dozen Box (26063)", BASE, "Pilot") == "pen"


def test_vocabulary_json_round_trip_and_changes() -> None:
    again = Vocabulary.from_json(LEARNED.to_json())
    assert again == LEARNED and again.terms == LEARNED.terms
    doc = json.loads(LEARNED.to_json())
    assert doc["learned"]["colour"]["black"] == {"stated": 7, "unsupported": 4, "as_fact": 6}
    assert doc["thresholds"]["min_stated"] == 2
    changed = LEARNED.with_changes(
        add={"detail": ["Mock Collar"], "colour": ["Cobalt"]}, remove=["black", "BIC"]
    )
    assert changed.terms["mock collar"] == "detail" and changed.terms["cobalt"] == "colour"
    assert "black" not in changed.terms and "bic" not in changed.terms
    assert [t.term for t in changed.top_terms(5)] == ["party"]
    assert Vocabulary.from_json(changed.to_json()) == changed
    assert claims(MARKER, "A black cap, a cobalt barrel, BIC ink.", changed) == [
        ("colour", "cobalt", "cobalt")
    ]
    with pytest.raises(ValueError, match="unknown kind 'size'"):
        BASE.with_changes(add={"size": ["XL"]})


def test_type_check() -> None:
    vocabulary = LEARNED.with_changes(add={"type": ["sandal"]})

    def flag(row: str, text: str) -> str | None:
        title, attributes, _ = ROWS[row]
        return type_check(text, facts(title, attributes), vocabulary)

    assert flag(SHIRT, ROWS[SHIRT][2]) is None
    assert flag(SHIRT, "Stylish sandals for men. These sandals have a cushioned sole.") == "wrong_type"
    assert flag(SHIRT, "Pair the shirt with sandals and jeans.") is None  # its own type is the subject
    assert (
        flag(SHIRT, "Stylish sandals for men.") is None
    )  # named once: incidental, and "men" names the product
    assert flag(SHIRT, "A great buy for the price.") == "off_topic"
    assert flag(SHIRT, "Parron quality.") == "title_only"  # the brand and praise: nothing of the product
    assert flag(MARKER, ROWS[MARKER][2]) == "wrong_type"  # the catalog's description is of highlighters
    assert flag(FILE, ROWS[FILE][2]) == "off_topic"  # "An Amazon Brand."
    assert flag(SHIRT, "") is None  # the "empty" flag's case
    # The title said again, cut or reordered, is no description; two words more are still none, three are.
    title = ROWS[SHIRT][0]
    assert flag(SHIRT, title) == "title_only"
    assert flag(SHIRT, f"{' '.join(reversed(title.split()[:4]))}.") == "title_only"
    assert flag(SHIRT, f"{title}, soft and breathable.") == "title_only"
    assert flag(SHIRT, f"{title} with a spread collar and a chest pocket.") is None
    others = {
        row: flag(row, description) for row, (_, _, description) in ROWS.items() if row not in (MARKER, FILE)
    }
    # Two of the catalog's own descriptions say their title again ("La Briza Black Boots Price: Rs. 2,069
    # Attractive Look With Great Finish", "OIC Ergonomic Handle Tablet Clipboard Case"); the others pass.
    assert {row for row, f in others.items() if f} == {"SHOE4KACKB28FTHD", "amz18-office-01630"}
    assert {f for f in others.values() if f} == {"title_only"}


def test_faithful_cuts_sentences() -> None:
    title, attributes, description = ROWS[SWEATER]
    cut = faithful(description, facts(title, attributes), BASE)
    kept = (
        "Pep up your little boy's look with this trendy sweater. Layer it for him over a solid shirt, a pair of "
        "jeans and sneakers for a cosy look this season."
    )
    assert cut.text == f"{kept} {kept}"
    assert cut.sentences_cut == (
        "YK Self Design Round Neck Casual Boy's Sweater Price: Rs. 779 Navy sweater, has knitted pattern, a round "
        "neck, and long sleeves.",
        "Navy sweater, has knitted pattern, a round neck, and long sleeves.",
    )
    assert len(cut.sentences_kept) == 4


def test_faithful_cuts_clauses_and_bullets() -> None:
    title, attributes, description = ROWS[BELLIES]
    cut = faithful(description, facts(title, attributes), BASE)
    assert cut.text.startswith(
        "use shoe bags to prevent any stains or mildew; dust any dry dirt from the surface"
    )
    assert cut.sentences_cut == (
        "Key Features of AW Bellies Sandals Wedges Heel Casuals,AW Bellies Price: Rs. 499 Material: Synthetic "
        "Lifestyle: Casual Heel Type: Wedge Warranty Type: Manufacturer Product Warranty against manufacturing "
        "defects: 30 days Care instructions: Allow your pair of shoes to air and de-odorize at regular basis",
    )
    title, attributes, description = ROWS["SBEEH3QGU7MFYJFY"]  # FabHomeDecor Fabric Double Sofa Bed
    cut = faithful(description, facts(title, attributes), BASE)
    assert cut.text.startswith(
        "\u2022 Fine deep seating experience \u2022 Save Space with the all new click clack Sofa Bed \u2022 Easy to"
    )
    assert "Chrome legs with mango wood frame for long term durability" in cut.sentences_cut
    assert "mango wood" not in cut.text and "Leatherette Black" not in cut.text


def test_faithful_keeps_what_the_facts_support() -> None:
    title, attributes, description = ROWS["amz18-office-00527"]  # BIC Brite Liner Highlighter ... 5-Count
    cut = faithful(description, facts(title, attributes), BASE)
    assert cut.text == (
        "BIC Brite Liner highlighters mark in super-bright fluorescent ink to help you emphasize text in your "
        "notes, documents, and textbooks. They are also ACMI approved and non-toxic, making them ideal for use at "
        "home, school, or in the office."
    )
    assert faithful(cut.text, facts(title, attributes), BASE).sentences_cut == ()
    assert faithful("", facts(title, attributes), BASE) == faithful(" ", facts(title, attributes), BASE)


@pytest.mark.skipif(SHARED is None, reason="needs /work/shared/data")
def test_learned_vocabulary_of_the_flipkart_catalog() -> None:
    assert SHARED is not None
    rows = read_rows(SHARED / "flipkart_products.parquet", FLIPKART_COLUMNS)
    vocabulary = learn(rows.values(), BASE)
    assert vocabulary.thresholds == DEFAULT_THRESHOLDS
    assert {t.term: t.kind for t in vocabulary.learned} == {
        "white": "colour", "black": "colour", "red": "colour", "brown": "colour", "polyester": "material",
        "rubber": "material", "formal": "detail", "print": "detail", "artificial": "detail", "knee": "detail",
        "aroma": "detail", "knee length": "detail", "regular fit": "detail",
    }  # fmt: skip
    assert not MARKETING & {t.term for t in vocabulary.learned}
    assert sorted(vocabulary.types, key=lambda t: -vocabulary.types[t])[:6] == [
        "top", "ring", "watch", "shorts", "necktie", "boot",
    ]  # fmt: skip
    for title, attributes, _ in rows.values():
        text = ". ".join(value for _, value in attributes)
        assert check(text, facts(title, attributes), vocabulary) == [], title


def test_claims_learn_writes_a_vocabulary_show_lists_and_only_its_own_file_is_replaced(
    tmp_path: Path,
) -> None:
    """`enrich claims learn` over the real rows writes what `enrich claims show` reads back; a file at -o that
    is not a vocabulary enrich wrote is left as it was (exit 2) unless --overwrite."""
    from _support import enrich

    catalog = REPO / "tests" / "data" / "claims_rows.parquet"
    out = tmp_path / "claims.json"
    learned = enrich("claims", "learn", catalog, "-o", out, "--attr", "fabric", "--attr", "color=Colour")
    assert learned.exit_code == 0, learned.output
    vocabulary = Vocabulary.from_json(out.read_text())
    assert vocabulary.types  # head nouns of the titles
    shown = enrich("claims", "show", out)
    assert shown.exit_code == 0 and "learned terms" in shown.output, shown.output
    again = enrich("claims", "learn", catalog, "-o", out)  # its own file: replaced
    assert again.exit_code == 0, again.output

    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    refused = enrich("claims", "learn", catalog, "-o", notes)
    assert refused.exit_code == 2 and "--overwrite" in refused.output, refused.output
    assert notes.read_text() == '{"mine": true}\n'
    forced = enrich("claims", "learn", catalog, "-o", notes, "--overwrite")
    assert forced.exit_code == 0 and Vocabulary.from_json(notes.read_text()).types, forced.output
