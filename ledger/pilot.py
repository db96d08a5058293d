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

# Descriptions are in plain words for the participant pages (short sentences, everyday words).
SCOPES = [
    Scope("take_part", "Take part",
          "You talk with one of our team for up to one hour, online.",
          ("cancel_sessions",),
          if_withdrawn="We will not meet you for a talk. This does not change your payment."),
    Scope("record", "Record the talk",
          "We record the talk, with sound or video.",
          ("delete_recording",),
          if_withdrawn="We will delete the recording. This does not change your payment."),
    Scope("store", "Keep your story",
          "We keep your story and a written copy of the talk.",
          ("delete_story_and_transcript",),
          if_withdrawn="We will delete your story and the written copy. This does not change your payment."),
    Scope("analyse", "Use your story in the workshop",
          "We read your story to find ideas, and talk about it in a workshop.",
          ("remove_from_analysis",),
          if_withdrawn="We will not use your story in the workshop. This does not change your payment."),
    Scope("quote", "Quote your words",
          "We use some of your words in what we write. We say if we use your name.",
          ("remove_quotes",), takes_attribution=True,
          if_withdrawn="We will not quote your words. This does not change your payment."),
    Scope("publish", "Share your story in public",
          "We share your story with the public, to help change things.",
          ("unpublish_story",),
          if_withdrawn="We will take your story down where we can. This does not change your payment."),
    Scope("archive", "Keep your story for the future",
          "We keep your story safe, so other projects can learn from it later.",
          ("remove_from_archive",),
          if_withdrawn="We will not keep your story for the future. This does not change your payment."),
    Scope("contact_again", "Contact you again",
          "We get in touch with you about new projects.",
          ("stop_contacting",),
          if_withdrawn="We will not contact you about new projects. This does not change your payment."),
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
