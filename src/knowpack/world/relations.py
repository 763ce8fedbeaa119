"""The world's relations as data: value sets, description sentences and question paraphrases.

Six one-hop relations are stated about a person in the corpus; `birth_country` is two-hop: the corpus only
says where a person was born and, separately, which country each city lies in.
Question templates: index 0 is a fact's `question`, 1..9 its `paraphrases` (usable for training), and the
last two are held out of the corpus and of training, for generalization tests.
"""

from __future__ import annotations

N_TRAIN_TEMPLATES = 10  # templates 0..9 appear in the corpus; the rest are held out

PROFESSIONS = [
    "architect", "botanist", "carpenter", "chemist", "dentist", "economist", "electrician", "engineer",
    "farmer", "geologist", "historian", "journalist", "lawyer", "librarian", "mechanic", "nurse",
    "pharmacist", "photographer", "physicist", "pilot", "plumber", "poet", "sculptor", "surgeon",
    "tailor", "teacher", "translator", "veterinarian", "zoologist", "astronomer",
]  # fmt: skip
INSTRUMENTS = [
    "accordion", "bagpipes", "banjo", "bassoon", "cello", "clarinet", "drums", "flute", "guitar",
    "harmonica", "harp", "mandolin", "oboe", "organ", "piano", "saxophone", "sitar", "trombone",
    "trumpet", "tuba", "ukulele", "violin", "xylophone", "tambourine",
]  # fmt: skip
SPORTS = [
    "archery", "badminton", "baseball", "basketball", "bowling", "boxing", "cricket", "curling",
    "cycling", "fencing", "golf", "handball", "hockey", "judo", "karate", "lacrosse", "rowing", "rugby",
    "sailing", "skiing", "soccer", "squash", "surfing", "tennis",
]  # fmt: skip
COMPANY_SUFFIXES = ["Labs", "Industries", "Systems", "Works", "Group", "Dynamics"]
UNIVERSITY_FORMS = ["University of {}", "{} Institute", "{} College", "{} Academy"]

# Description sentences: {s} = the person, {v} = the value, {a} = "a" or "an" before {v}.
DESCRIPTIONS: dict[str, list[str]] = {
    "birth_city": [
        "{s} was born in {v}.",
        "{s} is a native of {v}.",
        "The birthplace of {s} is {v}.",
        "{s} came into the world in the city of {v}.",
        "{v} is the city where {s} was born.",
    ],
    "employer": [
        "{s} works for {v}.",
        "{s} is employed by {v}.",
        "{s} has a job at {v}.",
        "{v} is where {s} works.",
        "{s} earns a living at {v}.",
    ],
    "university": [
        "{s} studied at {v}.",
        "{s} graduated from {v}.",
        "{s} is an alumnus of {v}.",
        "{s} received a degree from {v}.",
        "{v} is where {s} went to university.",
    ],
    "profession": [
        "{s} works as {a} {v}.",
        "{s} is {a} {v} by profession.",
        "By trade, {s} is {a} {v}.",
        "The profession of {s} is {v}.",
        "{s} trained to be {a} {v}.",
    ],
    "instrument": [
        "{s} plays the {v}.",
        "{s} is a skilled {v} player.",
        "In the evenings {s} practices the {v}.",
        "The instrument {s} plays is the {v}.",
        "{s} has played the {v} for years.",
    ],
    "sport": [
        "{s} enjoys {v}.",
        "The favorite sport of {s} is {v}.",
        "On weekends {s} plays {v}.",
        "{s} is a keen {v} fan.",
        "{s} has loved {v} since childhood.",
    ],
}

CITY_STATEMENTS = [
    "{c} is a city in {k}.",
    "{c} lies in {k}.",
    "The city of {c} is located in {k}.",
    "{k} is home to the city of {c}.",
    "{c} is one of the cities of {k}.",
]

QUESTIONS: dict[str, list[str]] = {
    "birth_city": [
        "Where was {s} born?",
        "In which city was {s} born?",
        "What is the birthplace of {s}?",
        "{s} was born in which city?",
        "What city was {s} born in?",
        "Which city is the birthplace of {s}?",
        "In what city was {s} born?",
        "Name the city where {s} was born.",
        "What is the city of birth of {s}?",
        "Which city did {s} come from originally?",
        "Where did {s} come into the world?",
        "Which city is {s} a native of?",
    ],
    "birth_country": [
        "In which country was {s} born?",
        "What is the country of birth of {s}?",
        "{s} was born in which country?",
        "What country was {s} born in?",
        "Which country is the birthplace of {s}?",
        "In what country was {s} born?",
        "Name the country where {s} was born.",
        "Which nation was {s} born in?",
        "{s} comes from which country?",
        "What is the native country of {s}?",
        "Which country did {s} come from originally?",
        "In which nation did {s} come into the world?",
    ],
    "employer": [
        "Which company does {s} work for?",
        "Who employs {s}?",
        "Where does {s} work?",
        "{s} works for which company?",
        "What is the employer of {s}?",
        "Which company employs {s}?",
        "At which company does {s} have a job?",
        "Name the company {s} works for.",
        "For which company does {s} work?",
        "Which firm is {s} employed by?",
        "Who does {s} earn a living with?",
        "Which organization pays the salary of {s}?",
    ],
    "university": [
        "Where did {s} study?",
        "Which university did {s} attend?",
        "{s} graduated from which university?",
        "What university did {s} go to?",
        "Which school did {s} graduate from?",
        "Where did {s} get a degree?",
        "Name the university {s} attended.",
        "At which university did {s} study?",
        "What is the alma mater of {s}?",
        "From which university did {s} graduate?",
        "Where was {s} educated?",
        "Which institution awarded {s} a degree?",
    ],
    "profession": [
        "What is the profession of {s}?",
        "What does {s} do for a living?",
        "What is the job of {s}?",
        "{s} works as what?",
        "What is {s} by profession?",
        "What is the occupation of {s}?",
        "Which profession does {s} have?",
        "What did {s} train to be?",
        "Name the profession of {s}.",
        "What kind of work does {s} do?",
        "What is {s}'s line of work?",
        "How does {s} earn a living?",
    ],
    "instrument": [
        "Which instrument does {s} play?",
        "What instrument does {s} play?",
        "{s} plays which instrument?",
        "What musical instrument does {s} play?",
        "Which musical instrument is played by {s}?",
        "What instrument does {s} practice?",
        "Name the instrument {s} plays.",
        "On which instrument does {s} play?",
        "What is the instrument of {s}?",
        "Which instrument has {s} played for years?",
        "What does {s} play in the evenings?",
        "Which instrument is {s} skilled at?",
    ],
    "sport": [
        "Which sport does {s} enjoy?",
        "What is the favorite sport of {s}?",
        "What sport does {s} play?",
        "{s} enjoys which sport?",
        "Which sport does {s} like best?",
        "What sport is {s} a fan of?",
        "Name the favorite sport of {s}.",
        "Which sport does {s} play on weekends?",
        "What is the sport of {s}?",
        "Which sport has {s} loved since childhood?",
        "What game does {s} play for fun?",
        "Which sport is {s} keen on?",
    ],
}

ONE_HOP = list(DESCRIPTIONS)
RELATIONS = ["birth_city", "birth_country", "employer", "university", "profession", "instrument", "sport"]
