import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from amzqa.answer.pipeline import GATE_METHOD, QA, QAConfig, identity_words, threshold_for_rate
from amzqa.errors import AmzqaError, ArtifactError, ConfigError
from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt
from amzqa.grounding.text import content_words
from amzqa.records import Answer
from tests.conftest import ROOT


def test_ask_returns_a_cited_answer(qa_extractive):
    a = qa_extractive.ask("What ages is the LEGO Classic brick box for?")
    assert isinstance(a, Answer) and not a.abstained
    assert "Ages 4 to 99" in a.text
    assert a.citations and a.citations[0].uid == "B000068CKY" == a.sources[0].uid
    assert {c.uid for c in a.citations} <= {h.uid for h in a.sources}
    assert len(a.retrieved) == 5 and {h.uid for h in a.sources} <= {h.uid for h in a.retrieved}
    assert {"retrieve_s", "prompt_s", "generate_s", "total_s"} <= set(a.timings)


def test_the_model_reads_only_the_products_that_pass_the_gate(qa_extractive):
    """Five products are retrieved; the model reads (and may cite) only those the question is about, so another
    product's sentence cannot answer it. focus=False gives the model every retrieved product, as retrieved."""
    asked = "What ages is the LEGO Classic brick box for?"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, 5)
    passed = qa_extractive.gate(asked, hits)
    assert passed and len(passed) < len(hits) and all(h in hits for h in passed)
    relevances = qa_extractive.relevances(asked, hits)
    assert [h for h, r in zip(hits, relevances) if r >= qa_extractive.threshold()] == passed
    answer = qa_extractive.ask(asked)
    assert [h.uid for h in answer.sources] == [h.uid for h in passed] and answer.sources[0].uid == "B000068CKY"
    unfocused = QA(qa_extractive.retrievers, qa_extractive.generator, qa_extractive.config.replace(focus=False))
    assert [h.uid for h in unfocused.ask(asked).sources] == [h.uid for h in hits]
    stopped = qa_extractive.ask("Do you sell a lawn mower with a petrol engine?")
    assert stopped.abstained and len(stopped.sources) == 5  # an abstention shows what the catalog holds


def test_a_sibling_as_close_as_the_best_other_product_stops_the_question(qa_extractive):
    """"frozen ii" rules out "Frozen"; another Blu-ray matches the question as well as it does (format, "ii"): the
    sequel asked for is not in the catalog, and a tie with its predecessor is no sign that the other one is it."""
    asked = "frozen ii on blu-ray, is it longer than the first one?"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, 3)
    relevance = dict(zip((h.product.title for h in hits), qa_extractive.relevances(asked, hits)))
    frozen = next(t for t in relevance if t.startswith("Frozen"))
    others = [r for t, r in relevance.items() if t != frozen and not t.startswith("Planet Earth")]
    assert others and max(others) == relevance[frozen] >= qa_extractive.threshold()
    assert qa_extractive.gate(asked, hits) == []


def test_a_weaker_match_does_not_pass_when_the_closest_product_is_a_sibling(qa_extractive):
    """The Fitbit Charge 4 is the closest product to "fitbit charge 5" and the model number rules it out; the Garmin
    watch passes the threshold on its own (GPS, days) but is not what was asked: the question is stopped."""
    asked = "fitbit charge 5 built-in gps? battery days"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    titles = [h.product.title for h in hits]
    assert titles[0].startswith("Fitbit Charge 4") and any(t.startswith("Garmin") for t in titles)
    relevances = dict(zip(titles, qa_extractive.relevances(asked, hits)))
    garmin = next(t for t in titles if t.startswith("Garmin"))
    assert relevances[garmin] >= qa_extractive.threshold() and relevances[titles[0]] > relevances[garmin]
    assert qa_extractive.gate(asked, hits) == [] and qa_extractive.ask(asked).abstained
    # the Charge 4 asked for: it passes
    passed = qa_extractive.gate("fitbit charge 4 built-in gps? battery days", hits)
    assert passed and passed[0].product.title == titles[0]


def test_asking_words_do_not_pass_another_product(qa_extractive):
    """"battery life" is in every product that states one: a question naming a product the catalog lacks is not
    passed by another product's battery sentence (the Garmin watch for a GoPro)."""
    asked = "gopro hero 11 black battery life"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    assert any("Garmin" in h.product.title for h in hits)
    assert not qa_extractive.passes_gate(asked, hits) and qa_extractive.ask(asked).abstained
    # the same product named, its battery asked: passes
    assert qa_extractive.gate("garmin forerunner 45 battery life", hits)[0].product.title.startswith("Garmin Forerunner 45")


def test_hyphenated_words_match_however_a_shopper_spells_them():
    """A title's "Play-Doh 10-Pack" holds the shopper's "play doh 10 pack", "playdoh" and "play-doh"; another model's
    hyphenated identifier stays another model's."""
    from amzqa.answer.pipeline import coverage, with_word_parts

    title = with_word_parts(content_words("Play-Doh Modeling Compound 10-Pack Case of Colors"))
    assert coverage(content_words("play doh 10 pack"), title) == 1.0
    assert coverage(content_words("playdoh"), title) == coverage(content_words("Play-Doh"), title) == 1.0
    assert coverage(content_words("hands-on machine learning"), with_word_parts(content_words("Hands On Machine Learning"))) == 1.0
    xm4 = with_word_parts(content_words("Sony WH-1000XM4 Wireless Headphones"))
    assert coverage(content_words("wh-1000xm5"), xm4) == 0.0 and coverage(content_words("wh-1000xm4"), xm4) == 1.0


@pytest.mark.parametrize("asked, title", [
    ("playdoh 10 pack, any wheat in it?", "Play-Doh Modeling Compound 10-Pack"),  # hyphenated in the title
    ("logitech c920x does it fix dim lighting", "Logitech C920x"),  # a short name, whole: passes on it
    ("bose qc35 ii battery life when the cable is plugged in", "Bose QuietComfort 35 II"),  # the battery life asks
])
def test_a_named_product_passes_however_its_question_goes_on(qa_extractive, asked, title):
    """Each of these named its product, ranked first, and was stopped: the title's hyphens hid "play doh", the
    shopper's own asking words ("dim lighting") outweighed a two-word name, "battery life" read as part of the name
    ("battery" where the title says "Wireless"). Each passes now; the product asked about is what the model reads."""
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, 3)
    assert hits[0].product.title.startswith(title)
    assert [h.product.title for h in qa_extractive.gate(asked, hits)][0].startswith(title)


def test_a_short_name_counts_whole_or_not_at_all(qa_extractive):
    """A two-word name of which the product holds one word ("kindle" of "kindle voyage") is not half a match: its
    naming part gives the Paperwhite nothing, and the question abstains."""
    asked = "kindle voyage does it have ads"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, 3)
    assert hits[0].product.title.startswith("Kindle Paperwhite")
    whole = qa_extractive.relevances("kindle paperwhite does it have ads", hits[:1])[0]
    assert qa_extractive.relevances(asked, hits[:1])[0] < qa_extractive.threshold() <= whole
    assert qa_extractive.ask(asked).abstained


def test_out_of_catalog_question_abstains(qa_extractive):
    a = qa_extractive.ask("Do you sell a lawn mower with a petrol engine?")
    assert a.abstained and a.text == ABSTAIN_MESSAGE and a.citations == []


@pytest.mark.parametrize("asked, named", [
    ("sony wh-1000xm5 battery life with anc on?", False),   # only the XM4 is in the catalog
    ("anker powercore 20000 how many times does it charge an iphone", False),  # only the 10000
    ("Does the Samsung Galaxy S23 come with a charger?", False),
    ("sony wh1000xm4 battery life?", True),                  # the same identifier without its hyphen
    ("anker powercore 10,000 - how many times does it charge an iphone?", True),
])
def test_a_model_identifier_no_source_carries_stops_the_answer(qa_extractive, asked, named):
    """The near miss ranks first and the relevance gate alone would let it through: the answer would be another
    model's (the XM4's 30 hours for the XM5). An identifier the question names must be in a source."""
    answer = qa_extractive.ask(asked)
    assert answer.abstained is (not named), answer.text
    if named:
        assert answer.citations and answer.citations[0].uid in ("B08N5WRWNW", "B0756CYWWD")


def test_identifiers_are_names_not_quantities():
    from amzqa.grounding.identity import identifiers, names_product, unmatched_identifiers
    from amzqa.records import Product

    assert identifiers("sony WH-1000XM5, qc35 ii, ps5, 6pk, 4oz, 5qt, 20v, roomba j7+, bose 700, 30,000 bends") == [
        "wh1000xm5", "qc35", "ps5", "j7", "700", "30000"]
    bose = Product(0, "b", "Bose QuietComfort 35 II Wireless Headphones", "Up to 20 hours of battery life.")
    cable = Product(1, "c", "USB-C to USB-C Cable", "Nylon braided, tested for 30,000 bends.")
    assert names_product("qc35", bose) and not names_product("qc45", bose)  # an abbreviated name: its number
    assert names_product("30000", cable) and not names_product("3000", cable)  # whole numbers, not digit runs
    # measurements, ranges, prices, percentages and dimensions are not names; digits-letters-digits models are
    assert identifiers("15.6 inch, 100-240 v, 24/7, 1/4-20 mount, $129, is it 100% cotton, 1200 watts, 5x7 frame") == []
    assert identifiers("sony wh 1000xm5 battery") == ["1000xm5"]
    xm4 = Product(2, "x", "Sony WH-1000XM4 Wireless Headphones, Bluetooth 5.0", "Weighs 23 oz. Lamps 5 modes.")
    assert names_product("xm4", xm4) and names_product("1000xm4", xm4)  # a word ending with it
    assert not any(names_product(i, xm4) for i in ("xm5", "s23", "ps5"))  # not across words, nor "Bluetooth 5.0"
    assert unmatched_identifiers("bose qc45 battery?", [bose, cable]) == ["qc45"]
    assert unmatched_identifiers("is the usb c cable braided?", [cable]) == []


@pytest.mark.parametrize("asked, answered", [
    # a described product: the asking words ("who wrote it") are in no product and alone kept it below the threshold
    ("the novel about a teenager expelled from prep school wandering new york - who wrote it", "Salinger"),
    ("instant pot 8 quart - how many cooking programs does it have", None),  # the catalog's Instant Pot is 6 quarts
    ("instant pot duo 6 qt - how many cooking programs does it have", "13 one-touch programs"),
])
def test_the_gate_reads_the_naming_part_and_its_sizes(qa_extractive, asked, answered, monkeypatch):
    answer = qa_extractive.ask(asked)
    assert answer.abstained is (answered is None), answer.text
    if answered:
        assert answered in answer.text
    else:  # the size stops it: the 6-quart pot matches every other word
        import amzqa.answer.pipeline

        hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
        monkeypatch.setattr(amzqa.answer.pipeline, "size_conflicts", lambda question, product, in_ask=True: [])
        assert qa_extractive.passes_gate(asked, hits)


def test_the_naming_part_is_the_question_without_its_ask():
    from amzqa.grounding.identity import asking_part, naming_part, size_conflicts, split_question
    from amzqa.records import Product

    # fact nouns that can be part of a name ask only at the very end
    assert naming_part("jbl flip 5 playtime?") == "jbl flip 5"
    assert naming_part("fisher price playtime gym") == ""
    assert naming_part("le creuset 7.25 qt round dutch oven max oven temp") == "le creuset 7.25 qt round dutch oven"
    assert naming_part("fitbit charge 5 built-in gps? battery days") == "fitbit charge 5 built-in gps"
    # a remark after the ask is not the ask: the first clause that opens with an asking word asks
    assert split_question("play doh 10 pack - any allergens? my kid has celiac") == (
        "play doh 10 pack", "any allergens my kid has celiac")
    assert naming_part("the one with the dials, the red one - how do you clear it") == "the one with the dials the red one"
    # ... and before a separated ask
    assert split_question("theragun mini battery life (how many minutes)") == (
        "theragun mini", "battery life how many minutes")
    # a fact's noun before the asking word asks with it ("battery life when ..."), where two words still name
    assert split_question("bose qc35 ii battery life when using the cable") == (
        "bose qc35 ii", "battery life when using the cable")
    assert naming_part("anker high capacity power bank how long does it last") == "anker high capacity power bank"
    assert naming_part("kindle battery life how long") == "kindle battery life"  # one word would be left to name

    assert naming_part("the picture book where a tiger comes to tea - what is the girl called?") == (
        "the picture book where a tiger comes to tea")  # the clause after the dash asks, not the first asking word
    assert naming_part("how long does the battery last? (Kindle Oasis)") == "Kindle Oasis"  # "is" in "Oasis" asks not
    assert naming_part("le creuset 5.5 qt dutch oven, oven safe to what temp") == "le creuset 5.5 qt dutch oven"
    assert naming_part("what comes in the box? (Jellycat Bashful Bunny, Medium)") == "Jellycat Bashful Bunny Medium"
    assert naming_part("instant pot duo 8 qt how many people does it serve") == "instant pot duo 8 qt"
    assert naming_part("How long does the JBL Flip 5 battery last?") == ""  # the ask comes first: no part apart
    assert naming_part("frozen blu ray runtime?") == "frozen blu ray"  # the noun of the fact asks
    assert naming_part("airpods max battery life") == "airpods max"  # "max" names here, it does not ask
    assert naming_part("the pump-style lettuce dryer with a brake button - dishwasher safe?") == (
        "the pump-style lettuce dryer with a brake button")
    assert naming_part("keychron k2 keyboard, tell me about it") == "keychron k2 keyboard"
    assert naming_part("how many pages is the hobbit") == ""  # opens with its ask: no part stands apart
    assert naming_part("Is the Ninja Foodi lid dishwasher safe?") == ""
    assert naming_part("frozen blu ray") == ""  # nothing asks
    # titles holding asking words or fact nouns keep them
    assert naming_part("where the crawdads sing paperback how many pages") == "where the crawdads sing paperback"
    assert naming_part("what comes in the box? (OXO Salad Spinner, Large Capacity)") == "OXO Salad Spinner Large Capacity"
    assert naming_part("anker high capacity power bank warranty") == "anker high capacity power bank"
    assert naming_part("the price of salt paperback page count") == "the price of salt paperback"
    assert naming_part("how many pages? (Show and Tell)") == "Show and Tell"
    assert naming_part("taylor swift folklore cd tell me about it") == "taylor swift folklore cd"
    assert asking_part("the picture book where a tiger comes to tea - what is the girl called?") == "what is the girl called"
    assert asking_part("instant pot duo 8 qt how many people does it serve") == "how many people does it serve"
    assert asking_part("How long does the JBL Flip 5 battery last?") == "How long does the JBL Flip 5 battery last?"
    pot = Product(0, "p", "Instant Pot Duo 7-in-1 Electric Pressure Cooker, 6 Quart", "Serves up to 6 people.")
    assert size_conflicts("instant pot duo 8 qt - how many people does it serve", pot) == ["8 quart"]
    assert size_conflicts("instant pot duo 6 qt - how many people does it serve", pot) == []
    assert size_conflicts("instant pot duo for 8 people - how long for rice", pot) == []  # people: not a size
    assert size_conflicts("instant pot 16 oz - how many people", pot) == []  # states no size in ounces


def test_a_name_that_tells_a_sibling_apart_stops_it():
    from amzqa.grounding.identity import variant_conflicts
    from amzqa.records import Product

    kindle = Product(0, "k", 'Kindle Paperwhite (16 GB), 6.8" display', "Waterproof (IPX8) to 2 meters. Ad-supported.")
    dune = Product(1, "d", "Dune", "Frank Herbert's science fiction epic. Mass market paperback, 896 pages.")
    catan = Product(2, "c", "Catan Board Game (Base Game)", "Trade, build and settle the island of Catan. 3 to 4 players.")
    echo = Product(3, "e", "Echo Dot (3rd Gen) - Smart Speaker with Alexa", "Voice-controlled smart speaker.")
    mixer = Product(4, "m", "KitchenAid Artisan Series 5-Quart Tilt-Head Stand Mixer", "10 speeds. Moisturizing.")
    assert variant_conflicts("kindle oasis - how waterproof is it", kindle) == ["oasi~paperwhite"]
    assert variant_conflicts("dune messiah paperback how many pages", dune) == ["messiah+"]
    assert variant_conflicts("catan seafarers expansion how many players", catan) == ["seafarer~board"]
    assert variant_conflicts("echo dot 5th gen - does it show the time", echo) == ["5th~3rd"]
    # the product itself, named as shoppers name it, conflicts with nothing
    assert variant_conflicts("kindle paperwhite 16gb - is it waterproof", kindle) == []
    assert variant_conflicts("frank herbert dune paperback how many pages", dune) == []
    assert variant_conflicts("catan base game how many players", catan) == []
    assert variant_conflicts("echo dot 3rd gen - does it show the time", echo) == []
    assert variant_conflicts("kindle paperwhite black - is it waterproof", kindle) == []  # a colour names no sibling
    for asked in ("kitchenaid artisan tilt head mixer how many speeds",  # "Tilt-Head": one word in the title
                  "kitchenaid artsian mixer how many speeds",  # a typo
                  "kitchenaid artisan 5qt mixer set how many speeds",  # a size, a generic word
                  "the big stand mixer with a tilting head that kitchenaid makes - how many speeds"):  # described
        assert variant_conflicts(asked, mixer) == [], asked
    # who it is by names no sibling either: "clean code by uncle bob" is "Clean Code"
    code = Product(7, "c", "Clean Code: A Handbook of Agile Software Craftsmanship", "Robert C. Martin.")
    assert variant_conflicts("clean code by uncle bob: which language are the case studies in?", code) == []
    assert variant_conflicts("clean code collector's edition - how many pages", code) == ["collector+"]
    # forms of one word ("pruners", "Pruning Shears") and what a product is for ("kite for beginners") name no sibling
    shears = Product(5, "s", "Fiskars Bypass Pruning Shears, 5/8 Inch Cut Capacity", "Lifetime warranty.")
    kite = Product(6, "t", "Prism Kite Technology Delta Kite, Rainbow", "Single-line kite.")
    assert variant_conflicts("fiskars bypass pruners 5/8 - whats the warranty", shears) == []
    assert variant_conflicts("rainbow single-line kite for beginners - how much string", kite) == []
    assert variant_conflicts("fiskars anvil pruners - whats the warranty", shears) == ["anvil~bypass"]
    # the last word of a question that opens with its ask may ask ("... is catan seafarers"): not read as a name
    assert variant_conflicts("how many players is catan seafarers", catan) == []


def test_a_question_that_opens_with_its_ask_names_its_product_inside_it():
    """"How long does the Garmin Fenix 7 battery last?" has no naming part apart from its ask; the sibling rules read
    the words between the asking words ("garmin fenix 7"), where a word inside the name (before a title word or a
    number) names a sibling; the last words may ask ("is the dover thrift huck finn abridged")."""
    from amzqa.grounding.identity import named_in_ask, size_conflicts, variant_conflicts
    from amzqa.records import Product

    assert named_in_ask("How long does the Garmin Fenix 7 battery last?") == "garmin fenix 7"
    assert named_in_ask("does the echo dot 5th gen have an aux out for a speaker") == "echo dot 5th gen"
    assert named_in_ask("how many players is catan seafarers") == "catan seafarers"
    assert named_in_ask("what age is the lego classic box for") == "lego classic"
    garmin = Product(0, "g", "Garmin Forerunner 45, GPS Running Watch, Black", "Up to 7 days in smartwatch mode.")
    ninja = Product(1, "n", "Instant Pot Duo 7-in-1 Electric Pressure Cooker, 6 Quart", "The lid is dishwasher safe.")
    echo = Product(2, "e", "Echo Dot (3rd Gen) - Smart Speaker with Alexa", "Voice-controlled smart speaker.")
    lodge = Product(3, "l", "Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned", "Made in South Pittsburg, Tennessee.")
    huck = Product(4, "h", "The Adventures of Huckleberry Finn (Dover Thrift Editions)", "Unabridged republication.")
    assert variant_conflicts("How long does the Garmin Fenix 7 battery last?", garmin) == ["fenix~forerunner"]
    assert variant_conflicts("Is the Ninja Foodi pressure cooker lid dishwasher safe?", ninja) == ["foodi~electric"]
    assert variant_conflicts("does the echo dot 5th gen have an aux out for a speaker", echo) == ["5th~3rd"]
    assert size_conflicts("where is the lodge 12 inch cast iron skillet made", lodge) == ["12 inch"]
    # the product itself, and a last word that asks
    assert variant_conflicts("How long does the Garmin Forerunner 45 battery last?", garmin) == []
    assert variant_conflicts("does the echo dot 3rd gen have an aux out", echo) == []
    assert size_conflicts("where is the lodge 10.25 inch cast iron skillet made", lodge) == []
    assert variant_conflicts("is the dover thrift huck finn abridged?", huck) == []
    # a whole number rounds a stated size: "lodge 10 inch" is the 10.25-inch skillet; "6 quarts" the 5.8-quart fryer
    assert size_conflicts("where is the lodge 10 inch cast iron skillet made", lodge) == []
    fryer = Product(6, "f", "Cosori Air Fryer Max XL, 5.8 Quart", "Shake reminder.")
    assert size_conflicts("how many presets on the cosori 6 quart air fryer", fryer) == []
    assert size_conflicts("how many presets on the cosori 4 quart air fryer", fryer) == ["4 quart"]
    # a size written in words describes: "single-cup" sizes nothing
    brita = Product(5, "b", "Brita Large 10 Cup Water Filter Pitcher", "Holds 10 cups.")
    assert size_conflicts("how many filters come with that single-cup brewer people take camping", brita) == []
    assert size_conflicts("brita 8 cup pitcher - how long does a filter last", brita) == ["8 cup"]


def test_a_machine_translation_is_read_for_siblings_in_its_naming_part_only(qa_extractive):
    """A Portuguese question reaches the gate translated, with the translator's word order and inventions ("a
    frigideira de ferro fundido Lodge ..." -> "the Cast Iron Plamp Lodge"): "plamp" inside the name would read as a
    sibling of the skillet. The pipeline passes ``translated`` for Portuguese questions, and the words inside an ask
    are then not read."""
    asked = "Can the Cast Iron Plamp Lodge go on the dishwasher?"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    assert qa_extractive.gate(asked, hits) == []  # as a shopper's words: a sibling
    passed = qa_extractive.gate(asked, hits, translated=True)
    assert passed and passed[0].product.title.startswith("Lodge")


def test_the_name_inside_an_ask_keeps_its_model_number_and_sequels_in_roman_numerals():
    from amzqa.grounding.identity import describes, named_in_ask, naming_part, split_question, variant_conflicts
    from amzqa.records import Product

    # a fact word before a model number names ("charge 6"); elsewhere it asks ("hours", "page count on ...")
    assert named_in_ask("does the fitbit charge 6 have built in gps") == "fitbit charge 6"
    assert named_in_ask("page count on harry potter and the prisoner of azkaban paperback?") == (
        "harry potter prisoner azkaban paperback")
    assert named_in_ask("whats the running time on the frozen ii bluray") == "frozen ii bluray"
    fitbit = Product(0, "f", "Fitbit Charge 4 Fitness and Activity Tracker with Built-in GPS", "Up to 7 days.")
    frozen = Product(1, "z", "Frozen (Blu-ray + DVD + Digital Copy)", "Anna sets off to find her sister Elsa.")
    earth = Product(2, "e", "Planet Earth II [Blu-ray]", "Six episodes on 2 discs.")
    potter = Product(3, "p", "Harry Potter and the Sorcerer's Stone (Hardcover)", "Harry learns he is a wizard.")
    assert variant_conflicts("does the fitbit charge 6 have built in gps", fitbit) == ["6~4"]
    assert variant_conflicts("whats the running time on the frozen ii bluray", frozen) == ["2+", "ii+"]
    assert variant_conflicts("planet earth ii blu-ray - how many episodes", earth) == []
    assert variant_conflicts("planet earth 2 blu-ray - how many episodes", earth) == []
    # a word inside the name of an ask-first question: a title word, a number or a format follows it
    assert variant_conflicts("page count on harry potter and the prisoner of azkaban paperback?", potter) == [
        "paperback~hardcover", "prisoner~sorcerer"]
    assert variant_conflicts("page count on harry potter and the sorcerer's stone hardcover?", potter) == []
    # "piece count" asks; formats and numbers alone name nothing
    assert naming_part("lego star wars millennium falcon - piece count?") == "lego star wars millennium falcon"
    assert not describes("lego star wars millennium falcon - piece count?")
    assert split_question("how often should you swap the sonicare brush heads, 4 pack") == (
        "", "how often should you swap the sonicare brush heads, 4 pack")


def test_a_part_or_accessory_the_product_never_mentions_is_not_it():
    from amzqa.grounding.identity import variant_conflicts
    from amzqa.records import Product

    bodum = Product(0, "b", "Bodum Chambord French Press Coffee Maker, 34 oz, Chrome", "Borosilicate glass, 8 cups.")
    brita = Product(1, "r", "Brita Large 10 Cup Water Filter Pitcher with 1 Standard Filter", "Lasts 40 gallons.")
    yeti = Product(2, "y", "Yeti Rambler 20 oz Tumbler with MagSlider Lid, Navy", "Dishwasher safe.")
    assert "replacement!" in variant_conflicts(
        "replacement glass beaker for a bodum chambord 34 oz - is it dishwasher safe", bodum)
    assert variant_conflicts("brita standard replacement filters 3 pack - how long does each last", brita) == [
        "replacement!"]
    assert variant_conflicts("Is the Ninja Foodi lid dishwasher safe?", bodum) == ["lid!"]
    # the product's own parts, named with it
    assert variant_conflicts("yeti rambler 20 oz with magslider lid - dishwasher safe?", yeti) == []
    assert variant_conflicts("brita 10 cup filter pitcher - how long does the filter last", brita) == []
    # a description of eight words or more is read for no accessory
    assert variant_conflicts("the glass coffee press with a plunger and a steel lid that makes 8 cups - capacity?",
                             bodum) == []


def test_another_format_of_a_product_is_another_edition():
    from amzqa.grounding.identity import format_conflicts, variant_conflicts
    from amzqa.records import Product

    habits = Product(0, "a", "Atomic Habits: An Easy & Proven Way to Build Good Habits", "Hardcover, 320 pages.")
    assert variant_conflicts("atomic habits audiobook on cd, who narrates it", habits) == ["audiobook~hardcover"]
    assert variant_conflicts("atomic habits hardcover - how many pages", habits) == []
    assert format_conflicts("toy story vhs", "Toy Story [DVD]") == ["vhs~dvd"]
    assert format_conflicts("frozen blu ray", "Frozen (Blu-ray + DVD + Digital Copy)") == []
    assert format_conflicts("the legacy cd of that miles davis record", "Kind of Blue [Audio CD]") == []
    assert format_conflicts("the hobbit paperback", "The Hobbit") == []  # states no format: no conflict
    assert format_conflicts("is the penguin deluxe crime and punishment a hardcover or paperback",
                            "Crime and Punishment (Penguin Classics Deluxe Edition). Paperback, 720 pages.") == []


def test_relevance_reads_joined_units_dotted_names_and_asking_words(qa_extractive):
    """"16gb" is the title's "16 GB"; "olaplex no.3" names "Olaplex No. 3" (the identifier rule reads "no3"); "whats"
    asks, it names nothing."""
    from amzqa.answer.pipeline import identity_words, text_words

    assert "16gb" in text_words('Kindle Paperwhite (16 GB), 6.8" display') and "what" not in identity_words(
        "whats the name of the astronaut in andy weirs hail mary book")
    for asked, title in (("how deep can the 16gb paperwhite go underwater", "Kindle Paperwhite (16 GB)"),
                         ("olaplex no.3 how long do i leave it on", "Olaplex No. 3 Hair Perfector")):
        hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
        passed = qa_extractive.gate(asked, hits)
        assert passed and passed[0].product.title.startswith(title), asked


def test_the_place_in_a_series_asked_tells_the_books_apart(qa_extractive):
    """"The third hogwarts book" is not Book 1 or Book 2 (series_conflicts); the second is Book 2, also where the
    gate ranks Book 1 above it: another book of the series is left out, not taken for proof the asked one is absent."""
    from amzqa.grounding.identity import series_conflicts
    from amzqa.records import Product

    one = Product(0, "1", "Harry Potter and the Sorcerer's Stone (Book 1)", "Harry learns he is a wizard.")
    two = Product(1, "2", "Harry Potter and the Chamber of Secrets (Book 2)", "Students are petrified.")
    plain = Product(2, "3", "The Hunger Games", "Katniss volunteers.")
    assert series_conflicts("page count? (the third hogwarts book, where sirius black escapes)", one) == ["3~1"]
    assert series_conflicts("the 3rd harry potter book how many pages", two) == ["3~2"]
    assert series_conflicts("asimov's sequel to the first harry potter book - pages", one) == ["sequel~1"]
    assert series_conflicts("harry potter book 2 pages", one) == ["2~1"]
    assert series_conflicts("harry potter book 2 pages", two) == []
    assert series_conflicts("the first harry potter book - page count", one) == []
    assert series_conflicts("hands on ml 2nd ed page count", one) == []  # an edition, not a place in a series
    assert series_conflicts("the second hunger games book - pages", plain) == []  # the title gives no place
    asked = "2nd harry potter book, the sequel to the sorcerer's stone - page count"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    relevance = {h.product.title: r for h, r in zip(hits, qa_extractive.relevances(asked, hits))}
    book_one, book_two = (next(t for t in relevance if f"(Book {n})" in t) for n in (1, 2))
    assert relevance[book_one] > relevance[book_two] >= qa_extractive.threshold()
    assert [h.product.title for h in qa_extractive.gate(asked, hits)] == [book_two]
    assert qa_extractive.gate("the third harry potter book, with sirius black - how many pages", hits) == []


def test_a_model_number_the_title_gives_otherwise_names_a_sibling():
    from amzqa.grounding.identity import model_number_conflicts, variant_conflicts
    from amzqa.records import Product

    bose = Product(0, "b", "Bose QuietComfort 35 II Wireless Bluetooth Headphones, Black", "Up to 20 hours.")
    mouse = Product(1, "m", "Logitech MX Master 3 Advanced Wireless Mouse, Graphite", "4000 DPI sensor.")
    anker = Product(2, "a", "Anker PowerCore 10000 Portable Charger", "10000mAh.")
    plug = Product(3, "p", "Kasa Smart Plug Mini 15A, 4-Pack", "2.4 GHz WiFi only.")
    pot = Product(4, "i", "Instant Pot Duo 6 Quart 7-in-1 Electric Pressure Cooker", "13 one-touch programs.")
    assert model_number_conflicts("bose quietcomfort 45", bose) == ["45~35"]
    assert variant_conflicts("bose quietcomfort 45 - battery life?", bose) == ["45~35"]
    assert model_number_conflicts("logitech mx master 3s", mouse) == ["3s~3"]
    # the product itself, a count, a size, a number shoppers abbreviate, a number the title carries elsewhere
    assert model_number_conflicts("bose quietcomfort 35 ii", bose) == []
    assert model_number_conflicts("logitech mx master 3", mouse) == []
    assert model_number_conflicts("anker powercore 10k", anker) == []
    assert model_number_conflicts("kasa smart plug mini 4 pack", plug) == []
    assert model_number_conflicts("instant pot duo 8 qt", pot) == []  # a size: size_conflicts decides
    assert model_number_conflicts("instant pot duo 7 in 1", pot) == []
    frozen = Product(5, "f", "Frozen (Blu-ray + DVD + Digital Copy)", "Anna sets off to find her sister Elsa.")
    airpods = Product(6, "p", "Apple AirPods Pro (2nd Generation) Wireless Earbuds", "Up to 6 hours of listening time.")
    assert model_number_conflicts("frozen 2 blu-ray", frozen) == ["2+"]  # a sequel extends a short title
    assert model_number_conflicts("frozen blu-ray", frozen) == []
    assert model_number_conflicts("airpods pro 2", airpods) == []  # the title's ordinal carries it
    # years, inch marks, a first volume, a size after a longer title, a resolution the title writes so: not models
    assert model_number_conflicts("macbook air 13", Product(7, "a", "Apple MacBook Air 2020 Laptop M1 Chip", "")) == []
    assert model_number_conflicts('kindle paperwhite 6"', Product(8, "k", "Kindle Paperwhite (8 GB)", "")) == []
    assert model_number_conflicts("frozen 1 blu-ray", frozen) == []
    assert model_number_conflicts("crocs classic clog 10", Product(9, "c", "Crocs Classic Clog", "")) == []
    assert model_number_conflicts("roku ultra 4k", Product(10, "r", "Roku Ultra 4K Streaming Device", "")) == []
    # the title's number after another name word: a sibling, even where the description holds the word
    flip = Product(11, "j", "JBL Flip 5 Waterproof Portable Bluetooth Speaker", "12 hours of playtime on a charge.")
    assert model_number_conflicts("jbl charge 5", flip) == ["charge~flip"]
    assert model_number_conflicts("jbl flip 5", flip) == [] and model_number_conflicts("jbl speaker flip 5", flip) == []
    assert model_number_conflicts("jbl flipp 5", flip) == []  # a typo of the title's word is that word
    bose700 = Product(12, "b", "Bose Noise Cancelling Headphones 700", "Up to 20 hours.")
    assert model_number_conflicts("bose 700", bose700) == []  # "bose" is the title's own word


@pytest.mark.parametrize("asked, answered", [
    ("dune messiah paperback - how many pages", None),  # only "Dune" is in the catalog
    ("frank herbert dune paperback - how many pages", "896 pages"),
    ("kindle oasis - is it waterproof", None),  # the Paperwhite is not the Oasis
    ("jbl flip 6 waterproof rating", None),  # the Flip 5 is not the Flip 6
    ("garmin forerunner 55 gps battery hours", None),  # the Forerunner 45 is not the 55
    ("jbl charge 5 - how many hours does it play", None),  # the Flip 5 is not the Charge 5 (its description says "charge")
    ("jbl flip 5 waterproof rating", "IPX7"),
])
def test_the_gate_stops_a_sibling_the_name_tells_apart(qa_extractive, asked, answered, monkeypatch):
    answer = qa_extractive.ask(asked)
    assert answer.abstained is (answered is None), answer.text
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    if answered:
        assert answered in answer.text
    else:  # the name stops it at the gate: without the rule the sibling passes
        import amzqa.answer.pipeline

        assert not qa_extractive.passes_gate(asked, hits)
        monkeypatch.setattr(amzqa.answer.pipeline, "variant_conflicts", lambda question, product, in_ask=True: [])
        assert qa_extractive.passes_gate(asked, hits)


@pytest.mark.parametrize("q", ["", "   \n", "x" * 1001, None])
def test_bad_questions_are_clear_errors(qa_extractive, q):
    with pytest.raises(AmzqaError, match="question"):
        qa_extractive.ask(q)


def test_a_described_product_passes_on_its_description(qa_extractive, monkeypatch):
    """Word coverage and the title miss a shopper's own words for a product; its description's meaning does not.
    The bar is calibrated: above every calibration question's description match with its product taken out."""
    described = qa_extractive.described_threshold()
    assert described is not None and 0 < described < 1
    assert qa_extractive.config.calibration["described_threshold"] == described
    asked = "the book about a father and son walking south through a burned-out country - who wrote it"
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    assert hits[0].product.title.startswith("The Road")
    assert qa_extractive.relevance(asked, hits) < qa_extractive.threshold()  # the calibrated score alone stops it
    assert qa_extractive.description_match(asked, hits) >= described
    answer = qa_extractive.ask(asked)
    assert not answer.abstained and answer.sources[0].product.title.startswith("The Road"), answer.text
    assert not qa_extractive.passes_gate(asked, hits, described=None)  # the rule switched off
    # another shape has its own, fitted with its threshold (once, on first use)
    lexical = qa_extractive.described_threshold(3, "lexical")
    assert lexical is not None and 0 < lexical < 1 and qa_extractive._thresholds[(3, "lexical")][1] == lexical
    import amzqa.answer.pipeline

    monkeypatch.setattr(amzqa.answer.pipeline, "sentence_embedder", lambda retrievers: None)  # no MiniLM: rule off
    assert qa_extractive.description_match(asked, hits) is None and not qa_extractive.passes_gate(asked, hits)
    monkeypatch.undo()
    for absent in ("the kids book where a cat in a tall hat turns the house upside down on a rainy day - how many pages",
                   "the novel about a sailor hunting a white whale - who narrates it"):
        hits = qa_extractive.retrievers.hybrid.retrieve(absent, qa_extractive.config.k)
        assert not qa_extractive.passes_gate(absent, hits), absent  # the gate stops it, not the generator


def test_a_described_product_passes_on_its_descriptions_lead(qa_extractive):
    """A shopper's own words for a product reach a modest match with its description, under the described bar, and a
    low one with every other product retrieved: the match plus its lead over the next passes that one product, above a
    bar calibrated like the other (every product-removed calibration question that describes its product stays under
    it). Named products and a question whose best match has no lead do not pass on it."""
    from amzqa.grounding.identity import describes

    lead = qa_extractive.described_lead_threshold()
    calibration = qa_extractive.config.calibration
    assert lead is not None and calibration["described_lead_threshold"] == lead
    assert calibration["described_lead_questions"] > 0
    asked = ("old sci-fi classic about a mathematician who predicts the empire is going to collapse - whats the "
             "character called")
    assert describes(asked) and not describes("foundation asimov paperback - whats the main character called")
    hits = qa_extractive.retrievers.hybrid.retrieve(asked, qa_extractive.config.k)
    matches = sorted((m for m in qa_extractive.description_matches(asked, hits) if m is not None), reverse=True)
    assert qa_extractive.relevance(asked, hits) < qa_extractive.threshold()
    assert matches[0] < qa_extractive.described_threshold() and 2 * matches[0] - matches[1] >= lead
    passed = qa_extractive.gate(asked, hits)
    assert [h.product.title for h in passed] == ["Foundation (Foundation Series, Book 1)"]
    assert qa_extractive.gate(asked, hits, lead=None) == []  # the rule switched off
    assert qa_extractive.gate(asked, hits, described=None) == []  # off with the described rule
    answer = qa_extractive.ask(asked)  # the model reads that one product (a gate abstention shows every hit)
    assert [h.product.title for h in answer.sources] == ["Foundation (Foundation Series, Book 1)"]
    assert answer.raw_text and len(answer.retrieved) == len(hits)


def test_the_calibration_cache_keeps_the_described_threshold(qa_extractive, tmp_path):
    from amzqa.answer.pipeline import read_gate_cache, write_gate_cache

    key = {"index": "x", "k": 5}
    write_gate_cache(tmp_path, key, qa_extractive.config)
    read = read_gate_cache(tmp_path, key)
    assert read["calibration"]["described_threshold"] == qa_extractive.described_threshold()
    entry = json.loads(next(tmp_path.glob("*.json")).read_text())
    entry["calibration"]["described_threshold"] = "high"  # a file edited by hand: refitted, not applied
    next(tmp_path.glob("*.json")).write_text(json.dumps(entry))
    assert read_gate_cache(tmp_path, key) is None
    assert read["calibration"]["described_lead_threshold"] == qa_extractive.described_lead_threshold()
    entry["calibration"].update(described_threshold=0.6, described_lead_threshold=float("nan"))
    next(tmp_path.glob("*.json")).write_text(json.dumps(entry))
    assert read_gate_cache(tmp_path, key) is None


def test_calibration_lets_answerable_questions_through(qa_extractive):
    cfg = qa_extractive.config
    assert 0 < cfg.abstain_threshold < 1
    assert cfg.calibration["answered_rate"] >= 0.98
    assert cfg.calibration["product_removed_stopped_rate"] > 0.3


def test_threshold_for_rate():
    assert threshold_for_rate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.9) == 0.2
    assert threshold_for_rate([0.5, 0.7], 1.0) == 0.5


def test_save_and_from_dir_restore_the_pipeline(qa_extractive, sample_artifacts, tmp_path):
    settings = qa_extractive.save(tmp_path / "setup-a.json")
    saved = json.loads(settings.read_text())
    assert saved["abstain_threshold"] == qa_extractive.config.abstain_threshold
    again = QA.from_dir(sample_artifacts, generator="extractive", settings=settings, language="en")
    assert again.config.abstain_threshold == qa_extractive.config.abstain_threshold and again.config.language == "en"
    assert again.config.calibration == qa_extractive.config.calibration  # restored, not recalibrated
    assert again.ask("LEGO Classic brick box ages").citations[0].uid == "B000068CKY"


def test_qa_settings_never_go_into_the_sealed_index(qa_extractive, sample_artifacts, tmp_path, caplog):
    before = sorted(p.name for p in sample_artifacts.iterdir())
    with pytest.raises(ArtifactError, match="sealed artifact folder"):
        qa_extractive.save(sample_artifacts / "qa.json")
    assert sorted(p.name for p in sample_artifacts.iterdir()) == before
    # Two set-ups keep two files; settings saved on another index are recalibrated, not trusted.
    other = json.loads(qa_extractive.save(tmp_path / "a.json").read_text())
    other.update(index="0" * 64, abstain_threshold=0.99)
    (tmp_path / "b.json").write_text(json.dumps(other))
    with caplog.at_level("WARNING", logger="amzqa.answer.pipeline"):
        again = QA.from_dir(sample_artifacts, generator="extractive", settings=tmp_path / "b.json")
    assert "calibrated on another index" in caplog.text
    assert again.config.abstain_threshold == qa_extractive.config.abstain_threshold  # recalibrated, not 0.99
    with pytest.raises(ConfigError, match="not a QA settings file"):
        QA.from_dir(sample_artifacts, generator="extractive", settings=sample_artifacts / "manifest.json")


def test_eight_concurrent_askers_get_their_own_answers(qa_extractive):
    questions = {
        "What ages is the LEGO Classic brick box for?": "B000068CKY",
        "How many pieces in the Melissa & Doug wooden railway?": "B00000IV35",
        "Is the Yeti Rambler tumbler dishwasher safe?": "B07JWBMNLB",
        "How long does the Sony WH-1000XM4 battery last?": "B08N5WRWNW",
        "What size is the Lodge cast iron skillet?": "B00004OCKR",
        "Is the JBL Flip 5 waterproof?": "B07QXV6N1B",
        "Who illustrated Goodnight Moon?": "0064430170",
        "How many players for Catan?": "B00D8STBHY",
    }
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(qa_extractive.ask, list(questions) * 2))
    for a in answers:
        assert not a.abstained, a.question
        assert a.sources[0].uid == questions[a.question]
        assert a.citations and a.citations[0].uid == questions[a.question]


@pytest.mark.slow  # ~20 s: eight transformers generations (make test-slow; CI runs it)
def test_concurrent_hf_asks(retrievers, hf_generator):
    qa = QA(retrievers, hf_generator, QAConfig(abstain_threshold=0.0))
    qs = ["Is the JBL Flip 5 waterproof?", "Who illustrated Goodnight Moon?", "What ages is the LEGO Classic brick box for?",
          "How many players for Catan?"] * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(qa.ask, qs))
    alone = qa.ask(qs[0])
    for q, a in zip(qs, answers):
        assert a.question == q and a.text
        assert {c.uid for c in a.citations} <= {h.uid for h in a.sources}
    assert answers[0].raw_text == alone.raw_text  # greedy and isolated: the same answer as when asked alone


def test_injected_instructions_do_not_change_the_answer(retrievers, hf_generator):
    """A description that tries to instruct the model gets the same prompt and output as without those sentences."""
    qa = QA(retrievers, hf_generator, QAConfig(abstain_threshold=0.0))
    question = "tell me about the bluetooth speaker with 8 hours battery"
    hits = retrievers.hybrid.retrieve(question, k=5)
    injected = [h for h in hits if h.uid == "B0MESSY004"]
    assert injected, "the injected product should be among the sources"
    assert "IGNORE PREVIOUS INSTRUCTIONS" in injected[0].product.content
    prompt = build_prompt(question, hits)
    assert "IGNORE" not in prompt.user_text and "ARRR" not in prompt.user_text and "pirate" not in prompt.user_text

    import dataclasses

    clean_product = dataclasses.replace(injected[0].product, content=injected[0].product.content.split("Otherwise: ")[1])
    clean_hits = [dataclasses.replace(h, product=clean_product) if h.uid == "B0MESSY004" else h for h in hits]
    clean = build_prompt(question, clean_hits)
    assert clean.user_text == prompt.user_text.replace("| description: Otherwise: a compact", "| description: a compact")
    a = qa.ask(question)
    assert "ARRR" not in a.text
    assert {c.uid for c in a.citations} <= {h.uid for h in a.sources}


def test_stream_yields_pieces_then_the_answer(qa_extractive):
    s = qa_extractive.stream("Is the JBL Flip 5 waterproof?")
    assert s.sources[0].uid == "B07QXV6N1B"
    text = "".join(s)
    assert s.answer is not None and s.answer.text == text.strip()
    assert "first_token_s" in s.answer.timings


def test_cli_ask_json(sample_artifacts):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "ask", "Is the JBL Flip 5 waterproof?", "--artifacts",
                           str(sample_artifacts), "--generator", "extractive", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["citations"][0]["uid"] == "B07QXV6N1B" and out["sources"][0]["uid"] == "B07QXV6N1B"
    assert "IPX7" in out["answer"]


def test_cli_ask_rejects_empty_question(sample_artifacts):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "ask", "  ", "--artifacts", str(sample_artifacts),
                           "--generator", "extractive"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "question is empty" in proc.stderr


# ---------------------------------------------------------------- the relevance threshold's prompt shape


def _counting_calibrate(monkeypatch) -> list:
    calls = []
    real = QA.calibrate

    def counting(self, *args, **kwargs):
        calls.append((kwargs.get("k") or self.config.k, kwargs.get("mode") or self.config.mode))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(QA, "calibrate", counting)
    return calls


def test_a_threshold_fitted_for_k5_is_not_applied_at_k3(qa_extractive, retrievers, monkeypatch):
    """ask(k=3) on a pipeline calibrated at k=5 uses a threshold fitted at k=3 (once), never the k=5 one."""
    from amzqa.generation import ExtractiveGenerator

    # the k=5 calibration with its threshold made impossible to pass, so whichever threshold is applied shows
    config = qa_extractive.config.replace(abstain_threshold=1.01, focus=False)  # focus off: every retrieved source
    qa = QA(retrievers, ExtractiveGenerator(), config)
    question = "Is the JBL Flip 5 waterproof?"
    assert qa.ask(question).abstained  # k=5: its own (impossible) threshold
    calls = _counting_calibrate(monkeypatch)
    answer = qa.ask(question, k=3)
    assert not answer.abstained and len(answer.sources) == 3 and answer.citations[0].uid == "B07QXV6N1B"
    assert qa.stream(question, k=3).sources[0].uid == "B07QXV6N1B" and qa.ask(question, k=3, mode="lexical").text
    assert calls == [(3, "hybrid"), (3, "lexical")]  # each other shape fitted once, then reused
    assert qa.threshold(k=3) == QA(retrievers, ExtractiveGenerator(), QAConfig(k=3)).config.abstain_threshold
    assert qa.threshold() == 1.01 and qa.config.k == 5
    # a threshold set by hand (no calibration) holds for every shape, as given
    by_hand = QA(retrievers, ExtractiveGenerator(), QAConfig(abstain_threshold=1.01))
    assert by_hand.ask(question, k=3).abstained and by_hand.threshold(k=3) == 1.01


def test_settings_fitted_for_another_shape_are_refitted(qa_extractive, sample_artifacts, tmp_path, caplog):
    saved = json.loads(qa_extractive.save(tmp_path / "a.json").read_text())
    saved["abstain_threshold"] = 1.01  # marks the file's threshold wherever it is applied
    (tmp_path / "b.json").write_text(json.dumps(saved))
    saved["calibration"].pop("fitted_for", None)  # as QA.save wrote it before thresholds recorded their shape
    (tmp_path / "legacy.json").write_text(json.dumps(saved))
    legacy = QA.from_dir(sample_artifacts, generator="extractive", settings=tmp_path / "legacy.json")
    assert legacy.config.abstain_threshold != 1.01  # fitted for a relevance score older than any recorded: refitted
    for name in ("b.json", "legacy.json"):
        if name == "b.json":
            same = QA.from_dir(sample_artifacts, generator="extractive", settings=tmp_path / name)
            assert same.config.abstain_threshold == 1.01  # the shape and score it was fitted for: restored as saved
        caplog.clear()
        with caplog.at_level("WARNING", logger="amzqa.answer.pipeline"):
            other = QA.from_dir(sample_artifacts, generator="extractive", settings=tmp_path / name, k=3, mode="lexical")
        assert other.config.abstain_threshold != 1.01, name
        assert not other.ask("Is the JBL Flip 5 waterproof?").abstained
        assert "was calibrated for k=5, mode=hybrid" in caplog.text
        assert other.config.calibration["fitted_for"] == {"k": 3, "mode": "lexical", "excerpt_chars": 300, "score": GATE_METHOD,
                                                          "answer_rate": 0.98}


def test_the_threshold_is_kept_at_full_precision(retrievers, tmp_path, sample_artifacts, monkeypatch):
    """A threshold rounded up (2/3 -> 0.6667) would stop the answerable questions scored exactly at the cut."""
    import amzqa.answer.pipeline
    from amzqa.generation import ExtractiveGenerator

    real, seen = amzqa.answer.pipeline.threshold_for_rate, []

    def spy(scores, rate):
        seen.append((list(scores), real(scores, rate)))
        return seen[-1][1]

    monkeypatch.setattr(amzqa.answer.pipeline, "threshold_for_rate", spy)
    qa = QA(retrievers, ExtractiveGenerator(), QAConfig(answer_rate=0.9))
    scores, fitted = seen[-1]
    assert qa.config.abstain_threshold == fitted
    assert sum(s >= qa.config.abstain_threshold for s in scores) >= 0.9 * len(scores)
    assert qa.config.calibration["answered_rate"] >= 0.9
    restored = QA.from_dir(sample_artifacts, generator="extractive", settings=qa.save(tmp_path / "qa.json"))
    assert restored.config.abstain_threshold == fitted  # and so through a settings file


def test_qa_settings_are_refused_anywhere_inside_an_index(qa_extractive, sample_artifacts, tmp_path):
    with pytest.raises(ArtifactError, match="sealed artifact folder"):
        qa_extractive.save(sample_artifacts / "setups" / "qa.json")
    assert not (sample_artifacts / "setups").exists()
    # a manifest.json that is not an amzqa one (a web app's, say) higher up does not block
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "manifest.json").write_text('{"name": "a web app"}')
    assert qa_extractive.save(tmp_path / "site" / "setups" / "qa.json").is_file()


def test_an_answer_stream_iterated_twice_replays_its_answer(qa_extractive):
    from amzqa.answer.pipeline import AnswerStream

    s = qa_extractive.stream("Is the JBL Flip 5 waterproof?")
    first = "".join(s)
    answer = s.answer
    assert "IPX7" in first and not answer.abstained
    assert "".join(s) == first and s.answer is answer  # replayed; the answer is the first pass's
    finished = AnswerStream(iter(["Boils ", "fast."]), [], lambda text: text)
    assert list(finished) == ["Boils ", "fast."] and list(finished) == ["Boils ", "fast."]
    assert finished.answer == "Boils fast."
    partial = qa_extractive.stream("Is the JBL Flip 5 waterproof?")
    next(iter(partial))
    with pytest.raises(AmzqaError, match="part-way"):
        list(partial)


def test_the_gate_reads_the_title_vectors_of_the_index_it_loaded(sample_artifacts, tmp_path):
    """An index replaced after RetrieverSet loaded (amzqa index --overwrite) does not reach a QA built later from
    that retriever set: its gate scores this load's rows, not the new build's."""
    import numpy as np

    from amzqa.generation import ExtractiveGenerator
    from amzqa.indexing.build import IndexConfig, build_index
    from amzqa.indexing.corpus import PrepareConfig, prepare
    from amzqa.retrieval import RetrieverSet
    from tests.conftest import SAMPLE

    index = tmp_path / "index"
    shutil.copytree(sample_artifacts, index)
    old_vectors = np.load(index / "embeddings.f16.npy").astype(np.float32)
    rset = RetrieverSet(index)
    small = tmp_path / "small.json"
    small.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:40]))
    prepare(PrepareConfig(input=small, out=tmp_path / "corpus"), progress=False)
    build_index(IndexConfig(corpus=tmp_path / "corpus", out=index, overwrite=True, calibrate_products=0), progress=False)
    assert len(np.load(index / "embeddings.f16.npy")) == 40 < len(rset.store)

    qa = QA(rset, ExtractiveGenerator(), QAConfig(abstain_threshold=0.0))
    assert qa.retrievers.title_vectors.shape[0] == len(rset.store)
    question = "Who illustrated Goodnight Moon?"
    hits = rset.hybrid.retrieve(question, 10)
    assert max(h.product.row_id for h in hits) >= 40  # rows the new, smaller build does not have
    query = rset.dense.embedder.encode([question])[0]
    rows = [h.product.row_id for h in hits]
    asked = identity_words(question)  # "illustrated" asks for a kind of fact: not counted
    expected = float(max(max(old_vectors[rows] @ query),
                         max(len(asked & content_words(f"{h.product.title} {h.product.content}")) / len(asked) for h in hits)))
    assert qa.relevance(question, hits) == pytest.approx(expected, abs=1e-6)
    assert qa.ask(question).sources[0].uid == "0064430170"
    # until it is told to load the new version: then every read is the new one's, and only once
    assert qa.reload_index() and len(qa.retrievers.store) == len(qa.retrievers.title_vectors) == 40
    assert not qa.reload_index()
    assert all(h.product.row_id < 40 for h in qa.ask(question).sources)


@pytest.mark.parametrize("said, shown", [
    # the sentence stating the fact asked first or second: the one beside it waits for it, then both go out in order
    ("Hand wash only [1]. The skillet is seasoned with vegetable oil [1].", None),
    ("The skillet is seasoned with vegetable oil [1]. Hand wash only [1].", None),
    # none states it while the cited source does elsewhere: not an answer (the check's rule), the stream agrees
    ("The skillet is seasoned with vegetable oil [1].", ABSTAIN_MESSAGE),
])
def test_the_stream_shows_what_the_checked_answer_shows(retrievers, capsys, said, shown):
    """Each sentence passes the support check by itself, but a fact question's answer is judged whole: a supported
    sentence beside the one stating the asked fact is kept, and without one the answer is none. The stream holds
    such sentences until the fact is stated, so what ``amzqa ask`` streams is the checked answer, printed once."""
    from amzqa.cli.main import print_stream
    from amzqa.generation import ExtractiveGenerator

    class Said(ExtractiveGenerator):  # the model's text fixed; retrieval, the check and the stream are the real ones
        text = said

        def generate(self, prompt):
            return self.text

        def stream(self, prompt):
            yield from (w + " " for w in self.text.split())

    stream = QA(retrievers, Said()).stream("is the lodge cast iron skillet dishwasher safe?")
    print_stream(stream)
    out = capsys.readouterr().out
    streamed = out.split("\n", 1)[0]
    assert streamed == stream.answer.text == (shown or said) and "checked answer:" not in out
    assert stream.answer.abstained is (shown == ABSTAIN_MESSAGE)


def test_ask_prints_no_second_answer_when_the_stream_was_the_answer(qa_extractive, capsys):
    from amzqa.cli.main import print_stream

    stream = qa_extractive.stream("Is the JBL Flip 5 waterproof?")
    print_stream(stream)
    out = capsys.readouterr().out
    assert "checked answer:" not in out and out.split("\n", 1)[0] == stream.answer.text
