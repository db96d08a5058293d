"""The default study: the anti-racism in co-production storytelling pilot (see the call)."""

from __future__ import annotations

from .domain import Activity, Scope

SLUG = "pilot"
NAME = "Racism within co-production: storytelling pilot"
CONTROLLER = {
    "name": "UCL co-production team",
    "email": "coproduction@ucl.ac.uk",
    "partner": "People's Voice Media",
}
LAWFUL_BASES = {
    "research": "UK GDPR Art 6(1)(e) public task",
    "special_category": "UK GDPR Art 9(2)(j) archiving, research and statistics",
    "payments": "UK GDPR Art 6(1)(c) legal obligation (financial records)",
    "research_ethics_consent": "Informed consent under the research ethics approval (not the "
    "lawful basis for processing)",
}
RETENTION_DAYS = 365 * 2

SCOPES = [
    Scope("take_part", "Take part", "Have a one-hour conversation with a peer about your story.",
          ("cancel_sessions",)),
    Scope("record", "Record", "We record the conversation (sound or video).",
          ("delete_recording",)),
    Scope("store", "Keep", "We keep your story and the written version of the conversation.",
          ("delete_story_and_transcript",)),
    Scope("analyse", "Use in the workshop",
          "We use your story to find themes, and in the sense-making workshop.",
          ("remove_from_analysis",)),
    Scope("quote", "Quote", "We quote your words in what we write, with or without your name.",
          ("remove_quotes",), takes_attribution=True),
    Scope("publish", "Share publicly", "We share your story in public, for change.",
          ("unpublish_story",)),
    Scope("archive", "Archive", "We keep your story in an archive for future research.",
          ("remove_from_archive",)),
    Scope("contact_again", "Contact again", "We contact you about future work.",
          ("stop_contacting",)),
]
ACTIVITIES = [
    Activity("conversation", "One-hour conversation", 2500),
    Activity("workshop", "Sense-making workshop", 2500),
]
FORM_VERSION = "1.0"
FORM_TEXT = """Storytelling pilot: consent form, version 1.0

You choose what happens to your story. You can say yes or no to each part.
You can change your mind at any time, using your personal link or by contacting us.
Changing your mind never costs you your payment.

1. Take part: a one-hour online conversation with a peer.
2. Record: we record the conversation.
3. Keep: we keep your story and the transcript.
4. Use in the workshop: we use your story to find themes and in the sense-making workshop.
5. Quote: we quote your words, with your name or anonymously, as you choose.
6. Share publicly: we share your story in public.
7. Archive: we keep your story in an archive for future research.
8. Contact again: we contact you about future work.

Contact: coproduction@ucl.ac.uk
"""
