"""The board's pages, one module each; the widgets several pages share are in ``dashboard.widgets``."""

from dashboard.pages import arms_page as _arms
from dashboard.pages import detection_page as _detection
from dashboard.pages import expedited_page as _expedited
from dashboard.pages import incidence_page as _incidence
from dashboard.pages import liver_page as _liver
from dashboard.pages.arms_page import arms_page
from dashboard.pages.audit_page import audit_page
from dashboard.pages.detection_page import detection_page
from dashboard.pages.efficacy_page import efficacy_page
from dashboard.pages.expedited_page import expedited_page
from dashboard.pages.feed_page import feed_page
from dashboard.pages.incidence_page import incidence_page
from dashboard.pages.liver_page import liver_page
from dashboard.pages.patient_page import patient_page
from dashboard.pages.signals_page import signals_page
from dashboard.pages.users_page import users_page

#: each page's ``warm``: the answer it shows first, kept for every session (``dashboard.warm``), slowest first
WARM = (_arms.warm, _expedited.warm, _liver.warm, _detection.warm, _incidence.warm)

__all__ = ["WARM", "arms_page", "audit_page", "detection_page", "efficacy_page", "expedited_page", "feed_page",
           "incidence_page", "liver_page", "patient_page", "signals_page", "users_page"]
